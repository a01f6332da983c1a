"""Object scores on hand-made label images whose every number is worked out by hand below."""

from __future__ import annotations

import numpy as np
import pytest

from unetkit.instance_metrics import InstanceScores, _ids_and_index, iou_table, match


def _case() -> tuple[np.ndarray, np.ndarray]:
    """Six true 10x10 objects: A and B found exactly, C split in two halves, D and E (side by side) merged
    into one, F missed. Ids are deliberately not contiguous."""
    truth = np.zeros((60, 60), np.uint16)
    pred = np.zeros((60, 60), np.uint16)
    truth[0:10, 0:10], pred[0:10, 0:10] = 3, 70  # A
    truth[0:10, 20:30], pred[0:10, 20:30] = 9, 5  # B
    truth[20:30, 0:10] = 12  # C ...
    pred[20:30, 0:5], pred[20:30, 5:10] = 1, 2  # ... split: IoU 0.5 with each half, not a hit
    truth[20:30, 20:30], truth[20:30, 30:40] = 40, 41  # D, E ...
    pred[20:30, 20:40] = 8  # ... merged: IoU 0.5 with each, not a hit
    truth[40:50, 0:10] = 7  # F, missed
    return truth, pred


def test_split_merged_and_missed_objects_score_as_worked_out_by_hand() -> None:
    truth, pred = _case()
    acc = InstanceScores()
    acc.update(truth, pred)
    s = acc.scores()
    # at IoU > 0.5: TP = A, B; FP = the two halves and the merged blob; FN = C, D, E, F
    assert (s["tp"], s["fp"], s["fn"]) == (2, 3, 4)
    assert s["precision"] == pytest.approx(2 / 5) and s["recall"] == pytest.approx(2 / 6)
    assert s["f1"] == pytest.approx(2 * 2 / (2 * 2 + 3 + 4))
    assert s["panoptic_quality"] == pytest.approx((1 + 1) / (2 + 3 / 2 + 4 / 2))
    # every threshold 0.5 ... 0.95 finds A and B only: 2 / (6 + 5 - 2)
    assert s["dsb_score"] == pytest.approx(2 / 9)
    # AJI: A 100/100, B 100/100, C 50/100 (one half), D 100/200 and E 100/200 (the blob twice), F 0/100,
    # the other half unpicked: 50 more in the union
    assert s["aji"] == pytest.approx((100 + 100 + 50 + 100 + 100) / (100 + 100 + 100 + 200 + 200 + 100 + 50))
    assert s["true_counts"] == [6] and s["predicted_counts"] == [5]


def test_perfect_and_empty_images() -> None:
    truth, _ = _case()
    acc = InstanceScores()
    acc.update(truth, truth * 3)  # the same objects under other ids
    acc.update(np.zeros((8, 8), int), np.zeros((8, 8), int))  # nothing to find, nothing found
    s = acc.scores()
    assert s["dsb_score"] == s["aji"] == s["f1"] == s["panoptic_quality"] == 1.0
    nothing = InstanceScores()
    nothing.update(truth, np.zeros_like(truth))
    assert nothing.scores()["recall"] == 0.0 and nothing.scores()["aji"] == 0.0 and nothing.scores()["dsb_score"] == 0.0


def test_iou_table_and_a_threshold_that_is_not_reached() -> None:
    truth, pred = _case()
    iou, inter, t_area, p_area = iou_table(truth, pred)
    assert iou.shape == (6, 5) and t_area.tolist() == [100] * 6 and sorted(p_area.tolist()) == [50, 50, 100, 100, 200]
    assert len(match(iou, 0.5)[0]) == 2
    assert len(match(iou, 0.45)[0]) == 4  # at 0.45 also one half of C, and D or E with the blob


@pytest.mark.parametrize("offset", [0, 10**12])  # compact ids are counted, huge ones sorted: the same table
def test_object_ids_are_found_as_sorting_finds_them(offset: int) -> None:
    rng = np.random.default_rng(1)
    truth = rng.choice(np.array([0, 3, 7, 8], np.int64), size=(20, 30))
    pred = rng.choice(np.array([0, 2, 5], np.int64), size=(20, 30))
    truth[truth > 0] += offset
    ids, index = _ids_and_index(truth)
    expected_ids, expected_index = np.unique(truth, return_inverse=True)
    assert np.array_equal(ids, expected_ids) and np.array_equal(index, expected_index.ravel())
    iou, inter, t_area, p_area = iou_table(truth, pred)
    for i, t in enumerate(expected_ids[1:]):
        for j, p in enumerate((2, 5)):
            both = ((truth == t) & (pred == p)).sum()
            assert inter[i, j] == both and iou[i, j] == pytest.approx(both / ((truth == t) | (pred == p)).sum())
    assert list(t_area) == [(truth == t).sum() for t in expected_ids[1:]]
