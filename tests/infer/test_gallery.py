"""Per-image scores and the best / worst images: hand-counted matrices, and only 2k thumbnails ever held."""

import numpy as np
import pytest

from unetkit.infer.gallery import THUMB_SIDE, Gallery, image_score, thumbnail

BINARY = ["background", "foreground"]


def test_an_image_is_scored_by_its_foreground_iou_or_its_miou() -> None:
    # binary: tp 3, fp 2 (background predicted as foreground), fn 1 -> IoU 3 / 6
    assert image_score(np.array([[6, 2], [1, 3]]), BINARY) == pytest.approx(0.5)
    # three classes: IoUs 4/6, 2/4, and class 2 absent from truth and prediction (left out) -> mean 7/12
    assert image_score(np.array([[4, 1, 0], [1, 2, 0], [0, 0, 0]]), ["a", "b", "c"]) == pytest.approx(7 / 12)
    assert image_score(np.array([[9, 0], [0, 0]]), BINARY) is None  # no foreground anywhere: nothing to score


def _image_with_iou(tp: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A 10x10 image whose truth has 10 foreground pixels, of which the prediction finds `tp` (IoU tp / 10)."""
    truth = np.zeros((10, 10), np.uint8)
    truth[0] = 1
    pred = np.zeros_like(truth)
    pred[0, :tp] = 1
    return np.random.default_rng(tp).random((1, 10, 10)).astype(np.float32), truth, pred


def _add(gallery: Gallery, name: str, image: np.ndarray, truth: np.ndarray, pred: np.ndarray) -> None:
    matrix = np.bincount(truth.ravel().astype(int) * 2 + pred.ravel(), minlength=4).reshape(2, 2)
    gallery.add(name, matrix, image, truth, pred)


def test_only_the_best_and_worst_k_are_kept_and_every_score_is_listed() -> None:
    gallery = Gallery(BINARY, k=2)
    order = [5, 9, 1, 7, 3, 10, 2, 8, 4, 6]  # true positives of image i: IoU tp / 10
    for i, tp in enumerate(order):
        _add(gallery, f"im{i}", *_image_with_iou(tp))
        assert len(gallery._best) <= 2 and len(gallery._worst) <= 2  # never more pictures than 2k
    assert [p.name for p in gallery.best()] == ["im5", "im1"]  # IoU 1.0, 0.9
    assert [p.name for p in gallery.worst()] == ["im2", "im6"]  # IoU 0.1, 0.2
    assert [p.score for p in gallery.worst()] == pytest.approx([0.1, 0.2])
    listed = gallery.as_dict()
    assert [e["score"] for e in listed["per_image"]] == pytest.approx([tp / 10 for tp in order])
    assert listed["best"] == [{"image": "im5", "score": 1.0}, {"image": "im1", "score": 0.9}]
    assert listed["score"] == "foreground IoU"


def test_with_fewer_than_2k_images_best_and_worst_split_them_and_unscored_ones_are_left_out() -> None:
    gallery = Gallery(BINARY, k=3)
    for i, tp in enumerate([4, 8, 6, 4]):
        _add(gallery, f"im{i}", *_image_with_iou(tp))
    _add(gallery, "empty", np.zeros((1, 10, 10), np.float32), np.zeros((10, 10), np.uint8),
         np.zeros((10, 10), np.uint8))
    best, worst = [p.name for p in gallery.best()], [p.name for p in gallery.worst()]
    assert best == ["im1", "im2", "im0"]  # equal scores (im0, im3): the earlier one ranks better
    assert worst == ["im3"]
    assert gallery.as_dict()["per_image"][-1] == {"image": "empty", "score": None}


def test_thumbnails_take_every_nth_pixel_so_masks_keep_their_classes() -> None:
    truth = np.arange(400 * 300, dtype=np.int64).reshape(400, 300) % 3
    image = np.random.default_rng(0).random((1, 400, 300)).astype(np.float32) * 7 - 2
    shown, small_truth, small_pred = thumbnail(image, truth.astype(np.uint8), truth.astype(np.uint8))
    step = 3  # ceil(400 / 192)
    assert small_truth.shape == (134, 100) and max(small_truth.shape) <= THUMB_SIDE
    np.testing.assert_array_equal(small_truth, truth[::step, ::step])
    assert shown.shape == (134, 100, 3) and shown.dtype == np.uint8
    assert shown.min() == 0 and shown.max() == 255  # min-max scaled for display
    np.testing.assert_array_equal(shown[..., 0], shown[..., 2])  # gray shown as three equal channels
