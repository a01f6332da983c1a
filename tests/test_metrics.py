"""Confusion matrix and scores, checked against counts worked out by hand."""

import json

import numpy as np
import pytest
import torch

from unetkit.config import IGNORE_INDEX
from unetkit.errors import UnetkitError
from unetkit.metrics import ConfusionMatrix, format_table, scores

X = IGNORE_INDEX
TARGET = torch.tensor([[0, 0, 1], [1, 2, 2], [2, X, 0]])
PRED = torch.tensor([[0, 1, 1], [1, 2, 0], [2, 2, 0]])
# (truth, prediction) pairs, the ignored pixel left out:
# (0,0) (0,1) (1,1) (1,1) (2,2) (2,0) (2,2) (0,0)
HAND_MATRIX = [[2, 1, 0], [0, 2, 0], [1, 0, 2]]
NAMES = ["bg", "a", "b"]


def test_confusion_matrix_by_hand() -> None:
    cm = ConfusionMatrix(3)
    cm.update(PRED, TARGET)
    assert cm.matrix.dtype == torch.int64
    assert cm.matrix.tolist() == HAND_MATRIX


def test_scores_by_hand() -> None:
    r = scores(torch.tensor(HAND_MATRIX), NAMES)
    # tp = [2, 2, 2], fp = column sum - tp = [1, 1, 0], fn = row sum - tp = [1, 0, 1]
    assert r["num_pixels"] == 8
    assert r["pixel_accuracy"] == pytest.approx(6 / 8)
    iou = [r["per_class"][n]["iou"] for n in NAMES]
    dice = [r["per_class"][n]["dice"] for n in NAMES]
    assert iou == pytest.approx([2 / 4, 2 / 3, 2 / 3])
    assert dice == pytest.approx([4 / 6, 4 / 5, 4 / 5])
    assert r["miou"] == pytest.approx(11 / 18)
    assert r["mean_dice"] == pytest.approx(34 / 45)
    assert [r["per_class"][n]["precision"] for n in NAMES] == pytest.approx([2 / 3, 2 / 3, 1.0])
    assert [r["per_class"][n]["recall"] for n in NAMES] == pytest.approx([2 / 3, 1.0, 2 / 3])
    assert [r["per_class"][n]["support"] for n in NAMES] == [3, 2, 3]
    assert "precision" not in r  # binary-only keys
    json.dumps(r, allow_nan=False)


def test_ignore_pixels_count_nowhere() -> None:
    cm = ConfusionMatrix(2)
    cm.update(torch.tensor([1, 1, 0, 1]), torch.tensor([1, X, X, 0]))
    assert cm.matrix.tolist() == [[0, 1], [0, 1]]


def test_two_updates_equal_one_update_on_concatenation() -> None:
    g = torch.Generator().manual_seed(0)
    pred = torch.randint(0, 4, (6, 9, 7), generator=g)
    target = torch.randint(0, 4, (6, 9, 7), generator=g)
    target[target == 3] = X
    once = ConfusionMatrix(4)
    once.update(pred, target)
    twice = ConfusionMatrix(4)
    twice.update(pred[:2], target[:2])
    twice.update(pred[2:], target[2:])
    assert torch.equal(once.matrix, twice.matrix)
    first, second = ConfusionMatrix(4), ConfusionMatrix(4)
    first.update(pred[:2], target[:2])
    second.update(pred[2:], target[2:])
    first.add_counts(second.matrix)
    assert torch.equal(first.matrix, once.matrix)
    assert once.matrix.sum().item() == int((target != X).sum())
    once.reset()
    assert once.matrix.sum().item() == 0


def test_absent_class_is_none_and_left_out_of_miou() -> None:
    # class 2 appears in neither truth nor prediction; class 1 is predicted once but never true.
    m = np.array([[3, 1, 0], [0, 0, 0], [0, 0, 0]])
    r = scores(m, NAMES)
    assert r["per_class"]["b"]["iou"] is None and r["per_class"]["b"]["dice"] is None
    assert r["per_class"]["a"]["iou"] == 0.0 and r["per_class"]["a"]["recall"] is None
    assert r["miou"] == pytest.approx((3 / 4 + 0.0) / 2)
    assert r["mean_dice"] == pytest.approx((6 / 7 + 0.0) / 2)
    json.dumps(r, allow_nan=False)


def test_binary_precision_recall_f1() -> None:
    cm = ConfusionMatrix(2)
    cm.update(torch.tensor([1, 1, 0, 0, 1, 0]), torch.tensor([1, 1, 1, 1, 0, 0]))  # tp 2, fp 1, fn 2
    r = scores(cm.matrix, ["background", "cell"])
    assert r["precision"] == pytest.approx(2 / 3)
    assert r["recall"] == pytest.approx(1 / 2)
    assert r["f1"] == pytest.approx(4 / 7)


def test_empty_matrix_gives_none_not_nan() -> None:
    r = scores(np.zeros((2, 2), dtype=np.int64), ["background", "cell"])
    assert r["pixel_accuracy"] is None and r["miou"] is None and r["num_pixels"] == 0
    assert "-" in format_table(r)


def test_label_outside_classes_is_a_user_error() -> None:
    cm = ConfusionMatrix(3)
    with pytest.raises(UnetkitError, match=r"\[3\]"):
        cm.update(torch.tensor([0, 1]), torch.tensor([0, 3]))
    with pytest.raises(ValueError):
        cm.update(torch.tensor([0, 5]), torch.tensor([0, 1]))
    with pytest.raises(ValueError):
        cm.update(torch.tensor([0, 1, 2]), torch.tensor([0, 1]))


def test_format_table_lists_each_class() -> None:
    text = format_table(scores(torch.tensor(HAND_MATRIX), NAMES))
    lines = text.splitlines()
    assert len(lines) == 1 + 3 + 2
    bg = lines[1].split()
    assert bg == ["bg", "0.5000", "0.6667", "0.6667", "0.6667", "37.5%"]
    assert f"{11 / 18:.4f}" in lines[-2] and "0.7500" in lines[-1]
