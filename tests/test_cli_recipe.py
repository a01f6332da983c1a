"""CLI paths of the paper's recipe: weight maps, EM scores on the run's validation split, tiled prediction."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from unetkit.cli import main


def test_weightmap_command_writes_picture_and_values(tmp_path: Path, tiny_dataset: Path, tiny_config: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["weightmap", str(tiny_config), str(tiny_dataset / "masks" / "img_0.png"), "-o",
                 str(tmp_path / "w"), "--set", "data.weight_map={object_classes: [1]}"]) == 0
    picture = np.asarray(Image.open(tmp_path / "w" / "img_0_weights.png"))
    weights = np.load(tmp_path / "w" / "img_0_weights.npy")
    assert picture.shape == (32, 32, 3) and weights.shape == (32, 32)
    # one disk of 113 pixels in 1024: class balance w_c = 1024 / (2 * count), no border term with one object
    mask = np.asarray(Image.open(tiny_dataset / "masks" / "img_0.png")) == 255
    np.testing.assert_allclose(weights[mask], 1024 / (2 * 113), rtol=1e-6)
    np.testing.assert_allclose(weights[~mask], 1024 / (2 * 911), rtol=1e-6)
    assert "1 weight map(s)" in capsys.readouterr().out


def test_evaluate_split_val_with_em_scores_and_tta(tiny_config: Path, tiny_checkpoint: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["evaluate", str(tiny_checkpoint), "--split", "val", "--em", "--tta", "flips", "-q"]) == 0
    out = capsys.readouterr().out
    assert "EM scores" in out and "v_rand" in out and "evaluation_val.json" in out


def test_invalid_tile_is_named(tiny_checkpoint: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["evaluate", str(tiny_checkpoint), "--split", "val", "--tile", "0"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--tile 0: Input should be greater than 0" in err


def test_predict_tiles_a_large_image(tmp_path: Path, tiny_checkpoint: Path) -> None:
    rng = np.random.default_rng(0)
    (tmp_path / "big").mkdir()
    Image.fromarray(rng.integers(0, 255, (150, 97), dtype=np.uint8)).save(tmp_path / "big" / "b.png")
    assert main(["predict", str(tiny_checkpoint), str(tmp_path / "big"), "-o", str(tmp_path / "out"),
                 "--tile", "32", "--overlap", "8", "--probabilities", "-q"]) == 0
    mask = np.asarray(Image.open(tmp_path / "out" / "b.png"))
    probs = np.load(tmp_path / "out" / "b_probs.npy").astype(np.float32)
    assert mask.shape == (150, 97) and set(np.unique(mask).tolist()) <= {0, 255}
    np.testing.assert_allclose(probs.sum(0), 1.0, atol=3e-3)
    assert np.array_equal(mask == 255, probs[1] > probs[0])


def test_export_onnx_then_predict_with_it(tmp_path: Path, tiny_dataset: Path, tiny_checkpoint: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    onnx_file = tmp_path / "tiny.onnx"
    assert main(["export", str(tiny_checkpoint), "-o", str(onnx_file)]) == 0
    assert main(["predict", str(onnx_file), str(tiny_dataset / "images"), "-o", str(tmp_path / "a"), "-q"]) == 0
    assert main(["predict", str(tiny_checkpoint), str(tiny_dataset / "images"), "-o", str(tmp_path / "b"), "-q"]) == 0
    for mask in sorted((tmp_path / "b").glob("*.png")):
        assert np.array_equal(np.asarray(Image.open(mask)), np.asarray(Image.open(tmp_path / "a" / mask.name)))
