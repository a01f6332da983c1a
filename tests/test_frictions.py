"""What a new user runs into first: each message and number asserted exactly."""

from __future__ import annotations

import csv
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from unetkit.config import Config, MaskConfig, load_config
from unetkit.data.dataset import load_pair
from unetkit.data.inspect import inspect_folder
from unetkit.data.io import channel_warning
from unetkit.data.masks import MaskCodec
from unetkit.errors import UnetkitError
from unetkit.infer.predictor import classes_of
from unetkit.train.run import train
from unetkit.train.setup import resolve_config


def test_threshold_rule_and_its_default_is_the_arg_max() -> None:
    probs = torch.tensor([[0.8, 0.5, 0.3, 0.1], [0.2, 0.5, 0.7, 0.9]])[:, None, :]  # (K=2, 1, 4)
    assert classes_of(probs).tolist() == [[0, 0, 1, 1]]  # the tie at 0.5 goes to class 0, as argmax does
    assert torch.equal(classes_of(probs), probs.argmax(0))
    assert classes_of(probs, 0.15).tolist() == [[1, 1, 1, 1]]
    assert classes_of(probs, 0.8).tolist() == [[0, 0, 0, 1]]


def test_the_class_rule_is_the_arg_max_on_every_layout() -> None:
    """Taken along a contiguous axis for speed, the rule stays torch's arg-max (first class on ties) for two
    classes and more, with the class axis first, second or given."""
    generator = torch.Generator().manual_seed(0)
    for classes in (2, 3, 5):
        probs = torch.randint(0, 4, (3, classes, 7, 9), generator=generator).float()  # many ties
        assert torch.equal(classes_of(probs), probs.argmax(1))
        assert torch.equal(classes_of(probs[0]), probs[0].argmax(0))
        flat = probs[0].reshape(classes, -1)  # (K, P)
        assert torch.equal(classes_of(flat, dim=0), flat.argmax(0))


def _near_binary_mask(path: Path) -> np.ndarray:
    mask = np.zeros((20, 20), np.uint8)
    mask[5:15, 5:15] = 255
    noisy = mask.copy()
    noisy[5, 5:15], noisy[0, :4] = 250, [1, 3, 5, 8]  # compression noise near both extremes
    Image.fromarray(noisy).save(path)
    return mask


def test_almost_binary_masks_get_a_threshold_hint_and_read_with_it(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    truth = _near_binary_mask(tmp_path / "masks" / "a.png")
    Image.fromarray(np.full((20, 20), 90, np.uint8)).save(tmp_path / "images" / "a.png")
    pair = (tmp_path / "images" / "a.png", tmp_path / "masks" / "a.png")
    with pytest.raises(UnetkitError) as err:
        load_pair(pair, 1, MaskCodec(MaskConfig(encoding="binary"), 2))
    assert str(err.value) == (f"{pair[1]}: mask holds 7 values from 0 to 255, 100.0% of pixels near 0 or 255: an "
                              "almost binary mask (JPEG-compressed or anti-aliased); set data.mask.threshold: 127 "
                              "to read values above 127 as 255")
    _, mask = load_pair(pair, 1, MaskCodec(MaskConfig(encoding="binary", threshold=127), 2))
    assert np.array_equal(mask, truth // 255)
    suggestion = inspect_folder(tmp_path)["suggestion"]
    assert suggestion["mask"] == {"encoding": "binary", "foreground_value": 255, "threshold": 127}
    assert suggestion["notes"][0].startswith("masks are almost binary (7 values, 100.0% of pixels near 0 or 255")


def test_swapped_image_and_mask_folders_are_named(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    photo, labels = tmp_path / "photo.png", tmp_path / "labels.png"
    Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(photo)
    Image.fromarray(np.where(rng.random((32, 32)) > 0.5, 255, 0).astype(np.uint8)).save(labels)
    with pytest.raises(UnetkitError) as err:
        load_pair((labels, photo), 1, MaskCodec(MaskConfig(encoding="binary"), 2))  # mask = the photo
    assert str(err.value) == (f"{photo}: this mask holds more than 32 distinct colours and its image labels.png "
                              "only 2: the image and mask folders look swapped; exchange data.train_images and "
                              "data.train_masks (or --images and --masks)")


def test_a_channel_conversion_is_one_warning_line(tmp_path: Path) -> None:
    files = []
    for i, mode in enumerate(("RGB", "L", "RGB")):
        files.append(tmp_path / f"{i}.png")
        Image.new(mode, (8, 8)).save(files[-1])
    assert channel_warning(files, 1) == ("warning: the model takes gray images (data.channels 1); 2 of 3 input(s) "
                                         "are RGB (e.g. 0.png) and are converted to gray by luminance")
    assert channel_warning(files[1:2], 1) is None


def test_config_messages_name_the_key_and_where_it_came_from(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("data:\n  crops_per_imgae: 2\n")
    with pytest.raises(UnetkitError) as err:
        load_config(path)
    assert str(err.value) == f"{path}: data.crops_per_imgae: unknown key; did you mean crops_per_image?"
    with pytest.raises(UnetkitError) as err:
        load_config(None, ["data.batch_size=abc"])
    assert str(err.value) == ("--set data.batch_size=abc: Input should be a valid integer, unable to parse string "
                              "as an integer")
    with pytest.raises(UnetkitError) as err:
        load_config(None, ["loss.terms=[{name: weighted_ce}]"])
    assert str(err.value) == "defaults: loss term `weighted_ce` needs data.weight_map, e.g. {object_classes: [1]}"


def test_one_mean_value_is_written_out_for_every_channel() -> None:
    cfg = resolve_config(load_config(None, ["data.channels=3", "data.mean=[0.4]", "data.std=[0.2]"]))
    assert cfg.data.mean == [0.4, 0.4, 0.4] and cfg.data.std == [0.2, 0.2, 0.2]


def test_export_to_a_folder_is_one_line(tiny_checkpoint: Path, tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    from unetkit.cli import main

    for target in ("/", str(tmp_path)):
        assert main(["export", str(tiny_checkpoint), "-o", target]) == 2
        err = capsys.readouterr().err
        hint = Path(target) / "model.onnx"
        assert err == f"unetkit: error: -o {target} is a folder; give the file to write, e.g. -o {hint}\n"


def test_a_longer_resumed_run_stretches_the_cosine_schedule(synthetic_config: Callable[..., Config]) -> None:
    cfg = synthetic_config("train.epochs=2", "train.run_name=lr", "optim.lr=0.01", "optim.min_lr=0")
    first = train(cfg, progress=False)
    longer = load_config(first.run_dir / "config.yaml", ["train.epochs=4"])
    train(longer, resume=first.run_dir, progress=False)
    lrs = [float(r["lr"]) for r in csv.DictReader(open(first.run_dir / "metrics.csv"))]
    # epochs 1-2 ran on a 2-epoch cosine (0.01, 0.005); epochs 3-4 follow the 4-epoch cosine at t = 2, 3
    expected = [0.01, 0.005, 0.01 * (1 + np.cos(np.pi * 2 / 4)) / 2, 0.01 * (1 + np.cos(np.pi * 3 / 4)) / 2]
    assert lrs == pytest.approx(expected, rel=1e-6)
    assert lrs[3] < lrs[2] <= lrs[1]  # never climbs after the old last epoch
