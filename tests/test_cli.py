"""The `unetkit` command: help texts, one-line errors with exit status 2, and a tiny end-to-end run."""

import csv
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from unetkit.cli import main
from unetkit.config import load_config


@dataclass
class Scene:
    """What a bad-input case may break: the tiny dataset, its config and an untrained checkpoint."""

    tmp: Path
    data: Path
    config: Path
    checkpoint: Path

    @property
    def train(self) -> list[str]:
        return ["train", str(self.config), "-q"]

    def evaluate(self, checkpoint: Path) -> list[str]:
        return ["evaluate", str(checkpoint), "--data", str(self.data), "-q", "--device", "cpu"]

    def predict(self, checkpoint: Path) -> list[str]:
        return ["predict", str(checkpoint), str(self.data / "images"), "-o", str(self.tmp / "pred"), "-q",
                "--device", "cpu"]


def save_gray(path: Path, array: np.ndarray) -> None:
    Image.fromarray(array.astype(np.uint8)).save(path)


# Each setup breaks one thing and returns the command line; the patterns must all appear in the error.
def image_without_mask(s: Scene) -> list[str]:
    (s.data / "masks" / "img_2.png").unlink()
    return s.train


def mask_without_image(s: Scene) -> list[str]:
    (s.data / "images" / "img_1.png").unlink()
    return s.train


def size_mismatch(s: Scene) -> list[str]:
    save_gray(s.data / "masks" / "img_0.png", np.zeros((24, 32)))  # 32 wide, 24 high
    return s.train


def corrupt_image(s: Scene) -> list[str]:
    (s.data / "images" / "img_3.png").write_bytes(np.random.default_rng(0).bytes(300))
    return s.train


def empty_mask_file(s: Scene) -> list[str]:
    (s.data / "masks" / "img_1.png").write_bytes(b"")
    return s.train


def undeclared_mask_value(s: Scene) -> list[str]:
    mask = np.zeros((32, 32))
    mask[5, 5] = 7  # binary masks hold only 0 and 255
    save_gray(s.data / "masks" / "img_2.png", mask)
    return s.train


def empty_images_folder(s: Scene) -> list[str]:
    for f in (s.data / "images").iterdir():
        f.unlink()
    return s.train


def unknown_config_key(s: Scene) -> list[str]:
    return [*s.train, "--set", "model.dept=3"]


def wrong_config_type(s: Scene) -> list[str]:
    return [*s.train, "--set", "train.epochs=many"]


def missing_config_file(s: Scene) -> list[str]:
    return ["train", str(s.tmp / "nowhere.yaml"), "-q"]


def set_without_equals(s: Scene) -> list[str]:
    return [*s.train, "--set", "train.epochs"]


def text_checkpoint(s: Scene) -> Path:
    path = s.tmp / "notes.txt"
    path.write_text("these are not weights\n")
    return path


def foreign_checkpoint(s: Scene) -> Path:
    path = s.tmp / "foreign.pt"
    torch.save({"state_dict": {"weight": torch.zeros(2)}, "epoch": 3}, path)
    return path


def missing_checkpoint(s: Scene) -> Path:
    return s.tmp / "missing.pt"


def predict_into_input_folder(s: Scene) -> list[str]:
    return ["predict", str(s.checkpoint), str(s.data / "images"), "-o", str(s.data / "images"), "-q"]


CHECKPOINTS = {
    "text-file": (text_checkpoint, [r"notes\.txt", "not a unetkit checkpoint"]),
    "foreign-dict": (foreign_checkpoint, [r"foreign\.pt", "not a unetkit checkpoint"]),
    "missing": (missing_checkpoint, [r"missing\.pt", "does not exist"]),
}

BAD_INPUT = [
    pytest.param(image_without_mask, [r"img_2\b", "no mask"], id="image-without-mask"),
    pytest.param(mask_without_image, [r"img_1\b", "no image"], id="mask-without-image"),
    pytest.param(size_mismatch, [r"masks/img_0\.png", r"32x24", r"image img_0\.png is 32x32"], id="size-mismatch"),
    pytest.param(corrupt_image, [r"images/img_3\.png", "cannot read"], id="corrupt-image"),
    pytest.param(empty_mask_file, [r"masks/img_1\.png", "empty"], id="zero-byte-mask"),
    pytest.param(undeclared_mask_value, [r"masks/img_2\.png", r"\b7\b", "binary"], id="mask-value-7-in-binary"),
    pytest.param(empty_images_folder, [r"tiny_data/images", "no images"], id="empty-images-folder"),
    pytest.param(unknown_config_key, [r"model\.dept", "unknown key"], id="unknown-config-key"),
    pytest.param(wrong_config_type, [r"train\.epochs", "integer"], id="wrong-config-type"),
    pytest.param(missing_config_file, [r"nowhere\.yaml", "does not exist"], id="missing-config-file"),
    pytest.param(set_without_equals, [r"train\.epochs", "key=value"], id="set-without-equals"),
    *(
        pytest.param(lambda s, make=make, command=command: getattr(s, command)(make(s)), patterns,
                     id=f"{command}-{kind}-checkpoint")
        for command in ("evaluate", "predict")
        for kind, (make, patterns) in CHECKPOINTS.items()
    ),
    pytest.param(predict_into_input_folder, [r"tiny_data/images", "holds input images"], id="predict-into-inputs"),
]


@pytest.mark.parametrize("setup, patterns", BAD_INPUT)
def test_bad_input_gives_one_error_line_and_status_2(
    setup: Callable[[Scene], list[str]], patterns: list[str], tmp_path: Path, tiny_dataset: Path,
    tiny_config: Path, tiny_checkpoint: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    scene = Scene(tmp_path, tiny_dataset, tiny_config, tiny_checkpoint)
    argv = setup(scene)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    status = main(argv)
    out, err = capsys.readouterr()
    assert status == 2
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("unetkit: error: "), err
    assert "Traceback" not in err and out == ""
    for pattern in patterns:
        assert re.search(pattern, lines[0]), f"{pattern!r} not in {lines[0]!r}"
    runs = tmp_path / "runs"
    assert not runs.exists() or not any(runs.iterdir())
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before  # nothing written anywhere


@pytest.mark.parametrize(
    "command, mentions",
    [
        pytest.param(None, ["train", "evaluate", "predict", "demo"], id="unetkit"),
        pytest.param("train", ["config", "--set", "KEY=VALUE", "--resume", "--quiet"], id="train"),
        pytest.param("evaluate", ["checkpoint", "--data", "--images", "--masks", "--output", "--device"],
                     id="evaluate"),
        pytest.param("predict", ["checkpoint", "INPUT", "--output", "--overlay", "--probabilities", "--device"],
                     id="predict"),
        pytest.param("demo", ["--output", "--epochs", "--quiet"], id="demo"),
    ],
)
def test_help_exits_0_and_lists_the_arguments(command: str | None, mentions: list[str],
                                              capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main([command, "--help"] if command else ["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    for word in mentions:
        assert word in out
    assert "exit with status 2" in " ".join(out.split())


def test_train_evaluate_predict_end_to_end(tmp_path: Path, tiny_dataset: Path, tiny_config: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", str(tiny_config), "-q"]) == 0
    run = tmp_path / "runs" / "tiny"
    assert f"run folder: {run}" in capsys.readouterr().out
    for name in ("best.pt", "last.pt", "config.yaml", "metrics.csv", "curves.png", "samples/epoch_001.png"):
        assert (run / name).is_file(), name
    assert load_config(run / "config.yaml") == load_config(tiny_config)  # augment [] leaves nothing to resolve
    with open(run / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 1 and rows[0]["epoch"] == "1"
    assert {"train_loss", "val_loss", "val_miou", "val_iou_background", "val_iou_foreground"} <= set(rows[0])
    with Image.open(run / "curves.png") as curves:
        assert curves.format == "PNG"

    assert main(["evaluate", str(run / "best.pt"), "--data", str(tiny_dataset), "-q", "--device", "cpu"]) == 0
    report = json.loads((run / "evaluation_tiny_data.json").read_text())
    assert set(report["per_class"]) == {"background", "foreground"}
    assert report["miou"] == pytest.approx(np.mean([c["iou"] for c in report["per_class"].values()]))
    # Each mask is a radius-6 disk fully inside 32x32: 113 foreground pixels (Gauss circle count for r = 6),
    # so the 4 images hold 4 * 113 = 452 foreground and 4 * (1024 - 113) = 3644 background pixels.
    assert np.sum(report["confusion_matrix"], axis=1).tolist() == [3644, 452]
    assert report["images"] == 4

    pred = tmp_path / "pred"
    argv = ["predict", str(run / "best.pt"), str(tiny_dataset / "images"), "-o", str(pred), "--overlay",
            "--probabilities", "-q", "--device", "cpu"]
    assert main(argv) == 0
    assert "4 mask(s) written" in capsys.readouterr().out
    for i in range(4):
        mask = np.asarray(Image.open(pred / f"img_{i}.png"))
        assert mask.shape == (32, 32) and set(np.unique(mask).tolist()) <= {0, 255}
        with Image.open(pred / f"img_{i}_overlay.png") as shown:
            assert shown.size == (32, 32) and shown.mode == "RGB"
        probs = np.load(pred / f"img_{i}_probs.npy")
        assert probs.shape == (2, 32, 32) and probs.dtype == np.float16
        np.testing.assert_allclose(probs.astype(np.float32).sum(0), 1.0, atol=2e-3)
        np.testing.assert_array_equal(np.where(probs[1] > probs[0], 255, 0), mask)  # mask = argmax, encoded
