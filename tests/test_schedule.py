import logging

import pytest

from sparling_core.schedule import AdaptiveSparsitySchedule, FixedSparsitySchedule


def test_adaptive_schedule_follows_spec():
    s = AdaptiveSparsitySchedule(decay_per_sample=1e-7)
    # T = 1 - 1e-7 * 20000 = 0.998: accuracy 0.5 does not pass, T becomes max(T, acc)
    assert s.step(20_000, 0.5) is False
    assert s.threshold == pytest.approx(0.998) and s.density == 0.5
    # accuracy beats the decayed threshold: density * 0.75, T rises to the accuracy
    assert s.step(40_000, 0.9995) is True
    assert s.density == pytest.approx(0.375) and s.threshold == pytest.approx(0.9995)
    assert s.step(60_000, 0.9970) is False  # T = 0.9995 - 0.002 = 0.9975 > 0.9970
    assert s.threshold == pytest.approx(0.9975)
    assert s.step(80_000, 0.9960) is True  # T = 0.9955 < 0.9960
    assert s.density == pytest.approx(0.5 * 0.75**2)


def test_threshold_is_clipped_and_samples_cannot_go_back():
    s = AdaptiveSparsitySchedule(decay_per_sample=1.0, min_threshold=0.2, max_threshold=0.9)
    s.step(10, 0.1)
    assert s.threshold == pytest.approx(0.2)
    with pytest.raises(ValueError, match="backwards"):
        s.step(5, 0.1)


def test_min_samples_between_updates():
    s = AdaptiveSparsitySchedule(threshold=0.0, min_samples_between_updates=100)
    assert s.step(50, 1.0) is False and s.density == 0.5
    assert s.step(100, 1.0) is True


def test_done_at_the_paper_density():
    s = AdaptiveSparsitySchedule(threshold=0.0, decay_per_sample=0.0,
                                 target_density=0.5 * 0.75**32)
    steps = 0
    while not s.done:
        steps += 1
        s.step(steps, 1.0 - 1e-9 * steps)  # always a little better... and then the same
        s.threshold = 0.0
    assert steps == 32 and s.density == pytest.approx(5.0226e-5, rel=1e-4)


def test_state_round_trip_and_repr(caplog):
    s = AdaptiveSparsitySchedule(decay_per_sample=1e-6, target_density=1e-4)
    with caplog.at_level(logging.INFO, logger="sparling_core.schedule"):
        s.step(1000, 0.9999)
    assert "density 0.5 -> 0.375" in caplog.text
    restored = AdaptiveSparsitySchedule()
    restored.load_state_dict(s.state_dict())
    assert restored == s
    assert "density=0.375" in repr(restored)
    fixed = FixedSparsitySchedule(1e-3)
    assert fixed.step(10, 1.0) is False and not fixed.done
    other = FixedSparsitySchedule()
    other.load_state_dict(fixed.state_dict())
    assert other.density == 1e-3


def test_schedule_never_prints(capsys):
    s = AdaptiveSparsitySchedule(threshold=0.0)
    s.step(1, 1.0)
    assert capsys.readouterr().out == ""


@pytest.mark.parametrize("kwargs", [{"density": 0}, {"multiplier": 1.0}, {"decay_per_sample": -1}])
def test_invalid_settings(kwargs):
    with pytest.raises(ValueError):
        AdaptiveSparsitySchedule(**kwargs)
