"""Bad command-line values and output places: one error line naming the value, nothing written.

Also the other side of `predict`'s output rules: masks already in the output folder are kept unless
`--overwrite`, and the command says how many it kept.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bad_inputs.builders import Scene
from unetkit.cli import main


def predict_negative_tile(s: Scene) -> list[str]:
    return s.predict(s.checkpoint, "--tile", "-5")


def predict_overlap_not_below_tile(s: Scene) -> list[str]:
    return s.predict(s.checkpoint, "--tile", "16", "--overlap", "16")


def predict_into_inputs(s: Scene) -> list[str]:
    return ["predict", str(s.checkpoint), str(s.data / "images"), "-o", str(s.data / "images"), "-q"]


def predict_output_is_an_input(s: Scene) -> list[str]:
    # out/img_0_overlay.png would be written through this link, into the input image itself
    (s.out / "img_0_overlay.png").symlink_to(s.data / "images" / "img_0.png")
    return s.predict(s.checkpoint, "--overlay")


def predict_unwritable_output(s: Scene) -> list[str]:
    def refuse(*args: object, **kwargs: object) -> tuple[int, str]:
        raise PermissionError(13, "Permission denied")  # what a read-only folder gives a non-root user

    s.monkeypatch.setattr(tempfile, "mkstemp", refuse)
    return s.predict(s.checkpoint)


def predict_uncreatable_output(s: Scene) -> list[str]:
    original = Path.mkdir

    def refuse(self: Path, *args: object, **kwargs: object) -> None:
        if self.name == "new_out":
            raise OSError(28, "No space left on device")
        original(self, *args, **kwargs)

    s.monkeypatch.setattr(Path, "mkdir", refuse)
    return ["predict", str(s.checkpoint), str(s.data / "images"), "-o", str(s.tmp / "new_out"), "-q"]


def predict_same_names(s: Scene) -> list[str]:
    (s.tmp / "more").mkdir()
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(s.tmp / "more" / "img_1.png")
    return ["predict", str(s.checkpoint), str(s.data / "images"), str(s.tmp / "more"), "-o", str(s.out), "-q"]


def predict_unknown_device(s: Scene) -> list[str]:
    return ["predict", str(s.checkpoint), str(s.data / "images"), "-o", str(s.out), "-q", "--device", "tpu:7"]


def evaluate_missing_data(s: Scene) -> list[str]:
    return ["evaluate", str(s.checkpoint), "--data", str(s.tmp / "elsewhere"), "-q", "--device", "cpu"]


def evaluate_without_data(s: Scene) -> list[str]:
    return ["evaluate", str(s.checkpoint), "-q", "--device", "cpu"]


def evaluate_test_split_undefined(s: Scene) -> list[str]:
    return ["evaluate", str(s.checkpoint), "--split", "test", "-q", "--device", "cpu"]


def evaluate_em_on_three_classes(s: Scene) -> list[str]:
    three = s.checkpoint_with("three.pt", data={"classes": ["a", "b", "c"], "mask": {"encoding": "index"}})
    return s.evaluate(three, "--em")


def ensemble_weights_not_numbers(s: Scene) -> list[str]:
    return ["ensemble", str(s.checkpoint), str(s.checkpoint), "--data", str(s.data), "--weights", "a,b", "-q",
            "-o", str(s.tmp / "ens.pt")]


def ensemble_negative_weights(s: Scene) -> list[str]:
    return ["ensemble", str(s.checkpoint), str(s.checkpoint), "--data", str(s.data), "--weights", "1,-1", "-q",
            "-o", str(s.tmp / "ens.pt"), "--device", "cpu"]


def ensemble_other_channels(s: Scene) -> list[str]:
    rgb = s.checkpoint_with("rgb.pt", data={"channels": 3})
    return ["ensemble", str(s.checkpoint), str(rgb), "--data", str(s.data), "-q", "-o", str(s.tmp / "ens.pt"),
            "--device", "cpu"]


def export_unknown_opset(s: Scene) -> list[str]:
    return ["export", str(s.checkpoint), "--opset", "7", "-o", str(s.tmp / "model.onnx"), "-q"]


def weightmap_missing_mask(s: Scene) -> list[str]:
    return ["weightmap", str(s.config), str(s.tmp / "nomask.png"), "-o", str(s.out), "-q"]


def patches_zero_size(s: Scene) -> list[str]:
    return ["data", "patches", str(s.data), str(s.tmp / "patches"), "--size", "0"]


def train_without_config(s: Scene) -> list[str]:
    return ["train", "-q"]


CASES = [
    pytest.param(predict_negative_tile, ["--tile -5", "greater than 0"], id="predict-negative-tile"),
    pytest.param(predict_overlap_not_below_tile, ["--overlap 16", "smaller than the tile 16"],
                 id="predict-overlap-equals-tile"),
    pytest.param(predict_into_inputs, [r"tiny_data/images", "holds input images"], id="predict-into-input-folder"),
    pytest.param(predict_output_is_an_input, [r"out/img_0_overlay\.png", r"is the input image .*images/img_0\.png"],
                 id="predict-output-path-is-input"),
    pytest.param(predict_unwritable_output, [r"\bout\b", "cannot write", "Permission denied"],
                 id="predict-unwritable-output"),
    pytest.param(predict_uncreatable_output, [r"new_out", "No space left"], id="predict-uncreatable-output"),
    pytest.param(predict_same_names, [r"\bimg_1\b", "overwrite each other"], id="predict-inputs-share-names"),
    pytest.param(predict_unknown_device, ["tpu:7", "not a device"], id="predict-unknown-device"),
    pytest.param(evaluate_missing_data, [r"elsewhere/images", "not a folder"], id="evaluate-missing-data"),
    pytest.param(evaluate_without_data, ["--data"], id="evaluate-without-data"),
    pytest.param(evaluate_test_split_undefined, [r"data\.test_images"], id="evaluate-undefined-test-split"),
    pytest.param(evaluate_em_on_three_classes, ["EM scores", "3 classes"], id="evaluate-em-on-3-classes"),
    pytest.param(ensemble_weights_not_numbers, [r"--weights 'a,b'", "numbers"], id="ensemble-weights-not-numbers"),
    pytest.param(ensemble_negative_weights, ["non-negative", r"-1\.0"], id="ensemble-negative-weights"),
    pytest.param(ensemble_other_channels, [r"rgb\.pt", "3 channel"], id="ensemble-other-channel-count"),
    pytest.param(export_unknown_opset, ["opset 7"], id="export-unknown-opset"),
    pytest.param(weightmap_missing_mask, [r"nomask\.png", "does not exist"], id="weightmap-missing-mask"),
    pytest.param(patches_zero_size, ["patch size", r"\b0\b"], id="patches-zero-size"),
    pytest.param(train_without_config, ["CONFIG", "--resume"], id="train-without-config"),
]


@pytest.mark.parametrize("setup, patterns", CASES)
def test_bad_argument(setup: Callable[[Scene], list[str]], patterns: list[str],
                      check_clean_error: Callable[..., str]) -> None:
    check_clean_error(setup, patterns)


def test_existing_masks_are_kept_unless_overwrite(scene: Scene, capsys: pytest.CaptureFixture[str]) -> None:
    (scene.out / "img_1.png").write_bytes(b"an earlier mask")  # 1 of the 4 inputs already has a mask
    assert main(scene.predict(scene.checkpoint)) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == [f"3 mask(s) written to {scene.out}",
                   "1 image(s) already had a mask there, kept as it was; --overwrite predicts them again"]
    assert (scene.out / "img_1.png").read_bytes() == b"an earlier mask"
    assert sorted(p.name for p in scene.out.iterdir()) == ["img_0.png", "img_1.png", "img_2.png", "img_3.png",
                                                          "keep.txt"]
    assert main(scene.predict(scene.checkpoint)) == 0  # all four kept now: nothing to do
    assert capsys.readouterr().out.splitlines()[0] == f"0 mask(s) written to {scene.out}"
    assert main(scene.predict(scene.checkpoint, "--overwrite")) == 0
    assert capsys.readouterr().out.splitlines() == [f"4 mask(s) written to {scene.out}"]
    with Image.open(scene.out / "img_1.png") as mask:
        assert mask.size == (32, 32)  # predicted again
