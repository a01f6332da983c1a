"""The fingerprint a plan is made from: encoding, classes, channels, object scale and intensity facts, found on
generated datasets of every mask encoding whose true values are known."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from unetkit.data.fingerprint import fingerprint

SIZE = 96
RADIUS = 10  # discs of diameter ~21 px


def _discs(rng: np.random.Generator, count: int = 4) -> np.ndarray:
    """(SIZE, SIZE) labels 0..count with `count` separate discs of radius RADIUS."""
    yy, xx = np.mgrid[:SIZE, :SIZE]
    label = np.zeros((SIZE, SIZE), np.uint8)
    centres = [(24, 24), (24, 72), (72, 24), (72, 72)]
    for i, (cy, cx) in enumerate(centres[:count]):
        jitter = rng.integers(-4, 5, size=2)
        label[(yy - cy - jitter[0]) ** 2 + (xx - cx - jitter[1]) ** 2 <= RADIUS ** 2] = i + 1
    return label


def _write(root: Path, images: list[np.ndarray], masks: list[np.ndarray], mask_suffix: str = ".png") -> Path:
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir(parents=True)
    for i, (image, mask) in enumerate(zip(images, masks, strict=True)):
        Image.fromarray(image).save(root / "images" / f"{i}.png")
        if mask_suffix == ".jpg":
            buffer = io.BytesIO()
            Image.fromarray(mask).save(buffer, format="JPEG", quality=75)
            (root / "masks" / f"{i}.jpg").write_bytes(buffer.getvalue())
        else:
            Image.fromarray(mask).save(root / "masks" / f"{i}{mask_suffix}")
    return root


def _dataset(root: Path, encode, channels: int = 1, gains: list[float] | None = None) -> Path:
    """Six images of bright discs on a dark background; `encode` turns (H, W) object labels into a mask file's
    pixels; `gains` scales each image's intensities (a mixed acquisition)."""
    rng = np.random.default_rng(0)
    images, masks = [], []
    for i in range(6):
        label = _discs(rng)
        image = np.where(label > 0, 180.0, 50.0) + rng.normal(0, 10, label.shape)
        image = np.clip(image * (gains[i] if gains else 1.0), 0, 255).astype(np.uint8)
        images.append(np.repeat(image[..., None], 3, axis=2) * np.array([1, 0, 1], np.uint8) if channels == 3
                      else image)
        masks.append(encode(label))
    return _write(root, images, masks)


ENCODINGS = {
    "binary 0/255": (lambda lab: np.where(lab > 0, 255, 0).astype(np.uint8), "binary", 2),
    "binary 0/1": (lambda lab: (lab > 0).astype(np.uint8), "binary", 2),
    "index": (lambda lab: np.where(lab > 0, 1 + (lab % 2), 0).astype(np.uint8), "index", 3),
    "gray values": (lambda lab: np.array([10, 128, 200], np.uint8)[np.where(lab > 0, 1 + (lab % 2), 0)],
                    "gray_values", 3),
    "palette": (lambda lab: np.array([[0, 0, 0], [255, 0, 0], [0, 255, 0]], np.uint8)[
        np.where(lab > 0, 1 + (lab % 2), 0)], "palette", 3),
}


@pytest.mark.parametrize("kind", sorted(ENCODINGS))
def test_the_encoding_classes_channels_and_object_scale_are_found(tmp_path: Path, kind: str) -> None:
    encode, encoding, classes = ENCODINGS[kind]
    fp = fingerprint(_dataset(tmp_path / "d", encode))
    assert fp.mask["encoding"] == encoding
    assert len(fp.classes) == classes and fp.channels == 1 and fp.num_images == 6
    assert fp.median_size == (SIZE, SIZE) and fp.bits == 8 and fp.background == 0
    disc_diameter = 2 * RADIUS + 1
    for facts in fp.classes[1:]:  # each object class holds discs of ~21 px
        assert abs(facts.diameter - disc_diameter) <= 2, facts
    expected_share = 4 * np.pi * RADIUS ** 2 / SIZE ** 2
    assert sum(c.share for c in fp.classes[1:]) == pytest.approx(expected_share, rel=0.1)
    assert fp.classes[1].objects_per_image == (4 if classes == 2 else 2)


def test_near_binary_jpeg_masks_read_as_binary_with_a_threshold(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    masks = [np.where(_discs(rng) > 0, 255, 0).astype(np.uint8) for _ in range(3)]
    images = [np.full((SIZE, SIZE), 100, np.uint8) for _ in range(3)]
    fp = fingerprint(_write(tmp_path / "d", images, masks, ".jpg"))
    assert fp.mask["encoding"] == "binary" and fp.mask["threshold"] is not None
    assert abs(fp.classes[1].diameter - (2 * RADIUS + 1)) <= 2


def test_colour_images_and_the_intensity_statistics(tmp_path: Path) -> None:
    fp = fingerprint(_dataset(tmp_path / "d", ENCODINGS["binary 0/255"][0], channels=3))
    assert fp.channels == 3 and len(fp.mean) == 3
    assert fp.mean[1] == pytest.approx(0.0, abs=1e-6)  # the green channel was zeroed
    assert not fp.mixed  # one acquisition


def test_images_of_different_gain_are_mixed_acquisitions(tmp_path: Path) -> None:
    same = fingerprint(_dataset(tmp_path / "same", ENCODINGS["binary 0/255"][0]))
    mixed = fingerprint(_dataset(tmp_path / "mixed", ENCODINGS["binary 0/255"][0],
                                 gains=[0.3, 0.5, 0.8, 1.0, 1.2, 1.4]))
    assert not same.mixed and mixed.mixed
    assert mixed.contrast_ratio > 2.0 or mixed.brightness_spread > 0.5


def test_16_bit_images_are_reported(tmp_path: Path) -> None:
    import tifffile

    rng = np.random.default_rng(0)
    (tmp_path / "d" / "images").mkdir(parents=True)
    (tmp_path / "d" / "masks").mkdir(parents=True)
    for i in range(3):
        label = _discs(rng)
        tifffile.imwrite(tmp_path / "d" / "images" / f"{i}.tif", np.where(label > 0, 3000, 500).astype(np.uint16))
        Image.fromarray(np.where(label > 0, 255, 0).astype(np.uint8)).save(tmp_path / "d" / "masks" / f"{i}.png")
    fp = fingerprint(tmp_path / "d")
    assert fp.bits == 16
    assert fp.mean[0] == pytest.approx((0.137 * 3000 + 0.863 * 500) / 65535, rel=0.1)  # scaled by the dtype range


def test_test_masks_in_another_encoding_are_matched_by_intensity(tmp_path: Path) -> None:
    """Training masks as colours, test masks as gray values in another order: classes pair up by the mean
    image intensity under each (the only link the files give)."""
    rng = np.random.default_rng(0)
    colours = np.array([[0, 0, 0], [255, 0, 0], [0, 255, 0]], np.uint8)
    test_values = np.array([200, 30, 90], np.uint8)  # background, then the two object classes, out of order

    def images_and_labels(count: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
        labels = [np.where(_discs(rng) > 0, 1 + (_discs(rng) % 2), 0) for _ in range(count)]
        brightness = np.array([20, 120, 240])  # class 0 dark, class 1 mid, class 2 bright
        return [(brightness[lab] + rng.normal(0, 5, lab.shape)).clip(0, 255).astype(np.uint8) for lab in labels], labels

    images, labels = images_and_labels(4)
    train = fingerprint(_write(tmp_path / "train", images, [colours[lab] for lab in labels]))
    images, labels = images_and_labels(2)
    test = _write(tmp_path / "test", images, [test_values[lab] for lab in labels])
    from unetkit.data.fingerprint import test_mask_for

    mask, reason = test_mask_for(train, test)
    # training classes are the colours sorted by value: black (dark), green (label 2, bright), red (label 1, mid)
    assert train.mask["palette"] == [[0, 0, 0], [0, 255, 0], [255, 0, 0]]
    assert mask == {"encoding": "gray_values", "values": [200, 90, 30]} and "matched by mean image intensity" in reason
    assert test_mask_for(train, tmp_path / "train")[0] is None  # the same encoding needs nothing


def test_a_class_labelled_more_generously_in_the_test_masks_is_warned_about(tmp_path: Path) -> None:
    """Discs drawn with radius 10 in training and test, except that one test folder draws them 4 px wider
    (another annotator's habit): only that folder, and only the disc class, is warned about."""
    from scipy.ndimage import binary_dilation

    from unetkit.data.fingerprint import share_shift

    rng = np.random.default_rng(1)

    def folder(name: str, count: int, grow: int) -> Path:
        labels = [(_discs(rng) > 0).astype(np.uint8) for _ in range(count)]
        images = [(40 + 160 * lab + rng.normal(0, 5, lab.shape)).clip(0, 255).astype(np.uint8) for lab in labels]
        masks = [255 * binary_dilation(lab, iterations=grow).astype(np.uint8) if grow else 255 * lab for lab in labels]
        return _write(tmp_path / name, images, masks)

    train = fingerprint(folder("train", 6, 0))
    low, high = train.classes[1].share_range
    assert 0 < low <= train.classes[1].share <= high < 1
    assert share_shift(train, folder("same", 2, 0)) == []
    notes = share_shift(train, folder("generous", 2, 4))
    # the discs' share grows from ~14% to ~27% (outside 1.25x the training range); the background's shrinks from
    # ~86% to ~73%, within the range divided by 1.25: a relative margin flags the small class
    assert len(notes) == 1 and notes[0].startswith(train.classes[1].name) and "labelled another way" in notes[0]


def test_test_masks_the_training_encoding_cannot_read_are_a_warning_not_an_error(tmp_path: Path) -> None:
    from unetkit.data.fingerprint import share_shift

    rng = np.random.default_rng(2)
    labels = [(_discs(rng) > 0).astype(np.uint8) for _ in range(3)]
    images = [(40 + 160 * lab).astype(np.uint8) for lab in labels]
    train = fingerprint(_write(tmp_path / "train", images, [255 * lab for lab in labels]))
    odd = _write(tmp_path / "test", images[:1], [(7 * labels[0] + 3).astype(np.uint8)])  # values 3 and 10
    (note,) = share_shift(train, odd)
    assert note.startswith("the test masks cannot be read with the training masks' encoding")


def test_sandstones_test_slice_labels_its_grain_phase_on_more_pixels(shared_datasets: Path) -> None:
    """The real case the warning is for: the grain phase (class 1) covers 2.7-4.8% of each training slice and
    7.2% of the test slice, whose masks use gray values matched to the training colours by intensity."""
    from unetkit.data.fingerprint import share_shift, test_mask_for

    root = shared_datasets / "sandstone"
    train = fingerprint(root / "train")
    mask, _ = test_mask_for(train, root / "test")
    assert mask == {"encoding": "gray_values", "values": [33, 201, 231, 65]}  # SOURCE.md's table
    (note,) = share_shift(train, root / "test", mask)
    assert note.startswith("class_1 covers 7.2% of the test pixels against 2.7%-4.8% of each training image")
