from collections import Counter

import numpy as np
import pytest
import torch

from sparling_core.domains import digit_circle as dc


def test_stamps_match_spec_geometry():
    stamps = dc.stamps()
    assert [s.shape[0] for s in stamps] == [12] * 10
    assert [s.shape[1] for s in stamps] == [9, 7, 8, 9, 8, 9, 8, 8, 7, 8]
    for s in stamps:  # 1-pixel empty border around the ink
        assert s[0].sum() == s[-1].sum() == s[:, 0].sum() == s[:, -1].sum() == 0
        assert s.sum() > 10


def test_sample_is_deterministic_and_seed_dependent():
    a, b, c = dc.sample(7), dc.sample(7), dc.sample(8)
    assert np.array_equal(a.image, b.image) and a.label == b.label
    assert not np.array_equal(a.image, c.image)


@pytest.mark.parametrize("seed", [-1, 1.5, "3"])
def test_bad_seed_is_rejected(seed):
    with pytest.raises(ValueError):
        dc.sample(seed)


def test_label_rule():
    for seed in range(200):
        s = dc.sample(seed)
        digits = [m.digit for m in s.motifs]
        assert len(set(digits)) == len(digits)  # distinct
        assert 3 <= len(digits) <= 6
        assert s.label[0] == min(digits)
        # the label is a rotation of the placement (counter-clockwise) order
        k = digits.index(min(digits))
        assert s.label == digits[k:] + digits[:k]


def test_the_label_is_the_angular_order_around_the_centres_centroid():
    """Placement order is increasing angle a with (row, col) = centre + r (cos a, sin a):
    down first, then right, counter-clockwise on screen. The placed (jittered) centres,
    sorted by that angle around their own centroid and rotated to the smallest digit, give
    the label on every image: what the channel decoder's sort relies on (README, issue
    15's speed section)."""
    for seed in range(dc.TEST_SEEDS_START, dc.TEST_SEEDS_START + 3000):
        s = dc.sample(seed)
        centres = np.array([m.center for m in s.motifs], dtype=float)
        rel = centres - centres.mean(0)
        order = np.argsort(np.arctan2(rel[:, 1], rel[:, 0]))
        digits = [s.motifs[i].digit for i in order]
        start = digits.index(min(digits))
        assert digits[start:] + digits[:start] == s.label, seed


def test_geometry_bounds_and_boxes():
    for seed in range(500):
        s = dc.sample(seed)
        assert s.image.shape == (100, 100) and s.image.dtype == np.uint8
        assert set(np.unique(s.image)) <= {0, 1}
        for m in s.motifs:
            r0, c0, r1, c1 = m.box
            h, w = dc.stamps()[m.digit].shape
            assert (r1 - r0, c1 - c0) == (h, w)
            assert 0 <= r0 and r1 <= 100 and 0 <= c0 and c1 <= 100
            assert (r0, c0) == (m.center[0] - h // 2, m.center[1] - w // 2)


def test_digits_per_image_distribution():
    counts = Counter(len(dc.sample(seed).label) for seed in range(4000))
    assert set(counts) == {3, 4, 5, 6}
    for n in (3, 4, 5, 6):  # uniform: 1000 each, 5 sigma ~ 135
        assert abs(counts[n] - 1000) < 140, counts
    digit_counts = Counter(d for seed in range(2000) for d in dc.sample(seed).label)
    assert all(abs(digit_counts[d] - 900) < 150 for d in range(10)), digit_counts


def test_noise_levels():
    images = np.stack([dc.sample(seed).image for seed in range(200)]).astype(float)
    # background: pre-noise b/2 = 0.1252, then 5% flips: 0.1252 * 0.95 + 0.8748 * 0.05
    corner = images[:, :5, :5].mean()
    assert abs(corner - (0.1252 * 0.95 + 0.8748 * 0.05)) < 0.01


def test_theoretical_min_density():
    assert dc.theoretical_min_density() == pytest.approx(4.5e-5)
    mean = np.mean([len(dc.sample(s).label) for s in range(2000)])
    assert mean / 1e5 == pytest.approx(4.49e-5, rel=0.03)


def test_datasets():
    val = dc.DigitCircleSeeds.validation(5)
    test = dc.DigitCircleSeeds.test(5)
    assert len(val) == 5 and val[0].seed == dc.VALIDATION_SEEDS_START
    assert test[4].seed == dc.TEST_SEEDS_START + 4
    with pytest.raises(IndexError):
        val[5]
    stream = iter(dc.DigitCircleStream(start=10))
    assert [next(stream).seed for _ in range(3)] == [10, 11, 12]
    images, labels = dc.collate([val[0], val[1]])
    assert images.shape == (2, 1, 100, 100) and images.dtype == torch.float32
    assert labels == [val[0].label, val[1].label]
