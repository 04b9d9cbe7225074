import numpy as np
import pytest
import torch

from sparling_core.analysis.metrics import (
    MotifStats,
    align_image,
    channel_assignment,
    edit_distance,
    sequence_error,
)
from sparling_core.domains.digit_circle import Motif

MOTIFS = [Motif(3, (16, 14), (10, 10, 22, 19)), Motif(7, (56, 54), (50, 50, 62, 58))]


def _map(*hits):
    m = torch.zeros(10, 100, 100)
    for channel, row, col, value in hits:
        m[channel, row, col] = value
    return m


def _report(alignments):
    stats = MotifStats()
    for a in alignments:
        stats.add_alignment(a, 10 * 100 * 100)
    return stats.report()


def test_perfect():
    a = align_image(_map((3, 15, 14, 1.0), (7, 55, 54, 2.0)), MOTIFS)
    assert [m.channel for m in a.matches] == [3, 7] and a.missed == 0
    assert (a.matches[0].row, a.matches[0].col) == (15, 14)
    r = _report([a])
    assert (r["fpe"], r["fne"], r["ce"]) == (0, 0, 0)
    assert r["density"] == pytest.approx(2 / 1e5) and r["density_ratio"] == pytest.approx(1.0)


def test_missed_digit():
    a = align_image(_map((3, 15, 14, 1.0)), MOTIFS)
    assert a.matches[1].channel is None and a.missed == 1
    r = _report([a])
    assert r["fne"] == pytest.approx(50.0) and r["fpe"] == 0 and r["ce"] == 0


def test_false_positive_pixels():
    a = align_image(_map((3, 15, 14, 1.0), (7, 55, 54, 1.0), (1, 90, 90, 0.5), (1, 0, 0, 0.5)),
                    MOTIFS)
    assert a.false_positives.tolist() == [[1, 0, 0], [1, 90, 90]]
    r = _report([a])
    assert r["fpe"] == pytest.approx(100 * 2 / 4)  # 2 FP pixels / (2 boxes + 2 FP)


def test_several_hits_in_one_box_count_once_and_strongest_wins():
    a = align_image(_map((3, 11, 11, 0.5), (5, 20, 17, 0.9), (3, 15, 14, 0.7),
                         (7, 55, 54, 1.0)), MOTIFS)
    assert a.matches[0].channel == 5 and a.matches[0].value == pytest.approx(0.9)
    assert len(a.false_positive_values) == 0


def test_permuted_channels_have_zero_confusion():
    alignments = []
    for _ in range(3):
        # channel 0 always fires on a 3, channel 9 always on a 7: a permutation
        alignments.append(align_image(_map((0, 15, 14, 1.0), (9, 55, 54, 1.0)), MOTIFS))
    r = _report(alignments)
    assert r["ce"] == 0
    assert r["channel_to_digit"]["0"] == 3 and r["channel_to_digit"]["9"] == 7


def test_confused_channels():
    # the same channel fires for both digits: one of each pair must be off-assignment
    alignments = [align_image(_map((4, 15, 14, 1.0), (4, 55, 54, 1.0)), MOTIFS)
                  for _ in range(4)]
    r = _report(alignments)
    assert r["ce"] == pytest.approx(50.0)
    assert np.array(r["confusion"])[3, 4] == 4 and np.array(r["confusion"])[7, 4] == 4


def test_overlapping_boxes_are_taken_in_order():
    motifs = [Motif(1, (16, 14), (10, 10, 22, 17)), Motif(2, (18, 18), (12, 15, 24, 22))]
    a = align_image(_map((6, 13, 16, 1.0)), motifs)  # inside both boxes
    assert a.matches[0].channel == 6 and a.matches[1].channel is None


def test_dict_motifs_and_custom_active_mask():
    m = _map((3, 15, 14, 0.4), (7, 55, 54, 0.9))
    motifs = [x.to_dict() for x in MOTIFS]
    a = align_image(m, motifs, active=m > 0.5)  # KL-style: only > 0.5 is on
    assert a.matches[0].channel is None and a.matches[1].channel == 7
    with pytest.raises(ValueError):
        align_image(torch.zeros(100, 100), motifs)


def test_assignment_is_one_to_one():
    confusion = np.zeros((10, 10), dtype=int)
    confusion[0, 1], confusion[1, 1], confusion[1, 0] = 5, 4, 3
    assignment = channel_assignment(confusion)
    assert assignment[1] == 0 and assignment[0] == 1
    assert len(set(assignment.values())) == 10


def test_edit_distance_and_sequence_error():
    assert edit_distance([1, 2, 3], [1, 2, 3]) == 0
    assert edit_distance([1, 2, 3], [1, 3]) == 1
    assert edit_distance([], [4, 5]) == 2
    assert sequence_error([1, 2, 3, 4], [1, 2, 9, 4]) == pytest.approx(0.25)
    assert sequence_error([], []) == 0
    stats = MotifStats()
    stats.add_sequence([1, 2], [1, 2])
    stats.add_sequence([1, 2, 3, 4], [4, 3, 2, 1])
    r = stats.report()
    assert r["e2ee"] == pytest.approx(50.0) and r["exact_match_accuracy"] == pytest.approx(50.0)
