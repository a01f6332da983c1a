"""Evaluation pictures: row normalization by hand, bars drawn to scale, files written, no figure left open."""

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pytest
from matplotlib.colors import to_rgb
from PIL import Image

from unetkit.infer.pictures import (
    BAR_COLOR,
    _iou_text,
    normalize_rows,
    plot_class_iou,
    plot_confusion,
    write_evaluation_pictures,
)
from unetkit.metrics import scores

CAMVID = ["Sky", "Building", "Pole", "Road", "Pavement", "Tree", "SignSymbol", "Fence", "Car", "Pedestrian",
          "Bicyclist"]


def _report(ious: list[float | None]) -> dict:
    """A minimal `scores`-shaped report with the given per-class IoUs."""
    defined = [v for v in ious if v is not None]
    return {"per_class": {f"class {i}": {"iou": v} for i, v in enumerate(ious)},
            "miou": sum(defined) / len(defined) if defined else None}


def _bar_widths(path: Path) -> list[int]:
    """Widest run of bar-coloured pixels in each horizontal band of bar rows, top to bottom."""
    rgb = np.asarray(Image.open(path).convert("RGB")).astype(int)  # (H, W, 3)
    bar = np.round(np.array(to_rgb(BAR_COLOR)) * 255).astype(int)
    per_row = (rgb == bar).all(axis=-1).sum(axis=1)  # (H,)
    widths, current = [], 0
    for count in per_row:
        if count:
            current = max(current, int(count))
        elif current:
            widths.append(current)
            current = 0
    return widths + ([current] if current else [])


def test_normalize_rows_by_hand() -> None:
    counts = np.array([[2, 1, 1], [0, 0, 0], [3, 0, 6]])
    expected = np.array([[0.5, 0.25, 0.25], [0.0, 0.0, 0.0], [1 / 3, 0.0, 2 / 3]])
    out = normalize_rows(counts)
    assert out.dtype == np.float64
    np.testing.assert_array_equal(out, expected)  # the empty row stays 0, not NaN
    assert counts[0, 0] == 2  # the input is left alone
    with pytest.raises(ValueError, match="square"):
        normalize_rows(np.ones((2, 3)))


def test_iou_text() -> None:
    assert _iou_text(None) == "n/a"
    assert _iou_text(0.71249) == "0.712"
    assert _iou_text(0.0) == "0.000"  # a real zero is not 'n/a'


def test_class_iou_bars_are_to_scale(tmp_path: Path) -> None:
    path = tmp_path / "iou.png"
    plot_class_iou(_report([0.8, 0.4]), path)
    top, bottom = _bar_widths(path)
    # the mIoU line (at 0.6) covers a couple of pixels of the 0.8 bar only
    assert top / bottom == pytest.approx(2.0, abs=0.03)
    plot_class_iou(_report([0.8, None]), path)
    assert len(_bar_widths(path)) == 1  # the undefined class gets no bar at all
    assert plt.get_fignums() == []


def test_class_iou_height_grows_with_classes(tmp_path: Path) -> None:
    plot_class_iou(_report([0.9, 0.5]), tmp_path / "two.png")
    plot_class_iou(_report([0.5] * 10 + [None]), tmp_path / "eleven.png", title="CamVid")
    two, eleven = (Image.open(tmp_path / n).size for n in ("two.png", "eleven.png"))
    assert min(two) > 200 and min(eleven) > 200
    assert eleven[1] > two[1] + 11 * 30  # about 0.42 in = 42 px more per class at 100 dpi
    assert plt.get_fignums() == []


def test_confusion_sizes_and_checks(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    eleven = rng.integers(0, 50, size=(11, 11)) + np.diag(np.full(11, 1000))
    eleven[7] = 0  # a class without true pixels
    plot_confusion(eleven, CAMVID, tmp_path / "camvid.png")
    plot_confusion(np.array([[90, 10], [5, 95]]), ["membrane", "cell"], tmp_path / "isbi.png", title="ISBI")
    big, small = (Image.open(tmp_path / n).size for n in ("camvid.png", "isbi.png"))
    assert min(small) > 200
    assert big[0] > small[0] + 9 * 40 and big[1] > small[1] + 9 * 40  # about 55 px per extra class
    with pytest.raises(ValueError, match="3 class names"):
        plot_confusion(np.eye(2), ["a", "b", "c"], tmp_path / "bad.png")
    assert plt.get_fignums() == []


def test_write_evaluation_pictures(tmp_path: Path) -> None:
    matrix = np.array([[30, 2], [4, 12]])
    names = ["background", "cell"]
    colors = np.array([[0, 0, 0], [255, 255, 255]], dtype=np.uint8)
    rng = np.random.default_rng(1)
    truth = (rng.random((24, 32)) > 0.5).astype(np.int64)
    samples = [(rng.normal(size=(1, 24, 32)).astype(np.float32), truth, 1 - truth)]
    out = tmp_path / "pictures"  # does not exist yet
    paths = write_evaluation_pictures(scores(matrix, names), matrix, names, samples, colors, out, prefix="val_")
    assert paths == [out / "val_class_iou.png", out / "val_confusion.png", out / "val_samples.png"]
    for path in paths:
        assert min(Image.open(path).size) > 200
    without = write_evaluation_pictures(scores(matrix, names), matrix, names, [], colors, out)
    assert without == [out / "class_iou.png", out / "confusion.png"]
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in paths + without)
    assert plt.get_fignums() == []
