"""ONNX / TorchScript export: logits equal PyTorch's at sizes other than the traced one, the files describe
themselves, and an ONNX file runs through predict, tiling and TTA exactly like its checkpoint."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from extras import require as require_extra
from PIL import Image

from unetkit import export
from unetkit.checkpoint import make_checkpoint, out_channels, save_checkpoint
from unetkit.config import Config, InferConfig, config_from_dict
from unetkit.data.source import make_prepare
from unetkit.errors import UnetkitError
from unetkit.export import export_model
from unetkit.infer.inference import InferOptions
from unetkit.infer.onnx_backend import load_onnx, read_metadata, require
from unetkit.infer.predict import load_predictor, predict
from unetkit.infer.predictor import Predictor
from unetkit.infer.tiled import predict_tiled
from unetkit.infer.tta import TTA
from unetkit.models.build import build_model

onnx = require_extra("onnx")
require_extra("onnxruntime")

VALID = {"padding": "valid", "depth": 2, "base_channels": 4, "init": "he"}
SAME = {"padding": "same", "depth": 2, "base_channels": 4, "init": "he"}
BINARY = {"classes": ["background", "membrane"], "mask": {"encoding": "binary", "foreground_value": 255}}


def _checkpoint(folder: Path, model: dict, data: dict | None = None, **sections: dict) -> tuple[Path, torch.nn.Module]:
    cfg: Config = config_from_dict({"data": data or BINARY, "model": model, **sections})
    torch.manual_seed(0)
    net = build_model(cfg.model, cfg.data.channels, out_channels(cfg)).eval()
    path = folder / "model.pt"
    save_checkpoint(make_checkpoint(net, cfg, epoch=0), path)
    return path, net


@pytest.mark.parametrize(("model", "sizes", "out"), [
    # valid, depth 2: 44 -> 40 -> pool 20 -> 16 -> pool 8 -> 4 -> up 8 -> 4 -> up 8 -> 4; 60 -> ... -> 20
    (VALID, (44, 60), (4, 20)),
    (SAME, (32, 48), (32, 48)),
])
def test_onnx_logits_match_pytorch_at_sizes_it_was_not_traced_at(tmp_path: Path, model: dict, sizes: tuple,
                                                                   out: tuple) -> None:
    checkpoint, net = _checkpoint(tmp_path, model)
    predictor, _ = load_onnx(export_model(checkpoint, tmp_path / "model.onnx"))
    assert (predictor.margin, predictor.stride) == ((20, 4) if model is VALID else (0, 4))
    for height, width in (sizes, sizes[::-1]):
        x = torch.randn(3, 1, height, width)
        got = predictor.logits(x)
        assert got.shape == (3, 2, *(out if height == sizes[0] else out[::-1]))
        torch.testing.assert_close(got, net(x).detach(), atol=1e-4, rtol=0)
    with pytest.raises(UnetkitError, match="45x44 does not fit"):
        predictor.logits(torch.zeros(1, 1, 45, 44))


def test_onnx_masks_equal_checkpoint_masks_on_isbi(tmp_path: Path, shared_datasets: Path) -> None:
    image = shared_datasets / "isbi2012" / "train" / "images" / "0.png"
    checkpoint, _ = _checkpoint(tmp_path, {**VALID, "base_channels": 8})
    exported = export_model(checkpoint, tmp_path / "model.onnx")
    from_pt = np.asarray(Image.open(predict(checkpoint, [image], tmp_path / "pt", progress=False)[0]))
    from_onnx = np.asarray(Image.open(predict(exported, [image], tmp_path / "onnx", progress=False)[0]))
    assert from_pt.shape == (512, 512)
    assert 0.02 < (from_pt == 255).mean() < 0.98  # both classes occur: the comparison means something
    assert (from_pt == from_onnx).mean() >= 0.995


def test_onnx_predictor_inside_tiling_and_tta(tmp_path: Path) -> None:
    checkpoint, net = _checkpoint(tmp_path, VALID)
    predictor, cfg = load_predictor(export_model(checkpoint, tmp_path / "model.onnx"), "cpu")
    image = np.random.default_rng(0).random((70, 90), dtype=np.float32)[..., None]  # (H, W, 1) in [0, 1]
    prepare = make_prepare(cfg.data)
    results = []
    for fn in (TTA(predictor, "d4"), TTA(Predictor(net, torch.device("cpu")), "d4")):
        probs = np.zeros((2, 70, 90), np.float32)
        index = predict_tiled(fn, image, prepare, InferConfig(tile=24, batch_size=3),
                              probabilities=probs)  # 3 x 4 tiles
        results.append((index, probs))
    (onnx_index, onnx_probs), (torch_index, torch_probs) = results
    np.testing.assert_allclose(onnx_probs, torch_probs, atol=1e-5)
    assert (onnx_index == torch_index).mean() >= 0.999


def test_fixed_tile_export_takes_one_size_and_predicts_like_the_checkpoint(tmp_path: Path) -> None:
    checkpoint, _ = _checkpoint(tmp_path, SAME)
    predictor, cfg = load_onnx(export_model(checkpoint, tmp_path / "fixed.onnx", tile=30))  # 30 -> input 32
    assert cfg.infer.tile == 32 and predictor.input_size_for(20) == 32
    assert predictor.is_valid_input(32) and not predictor.is_valid_input(48)
    with pytest.raises(UnetkitError, match="--tile 32 or less"):
        predictor.input_size_for(40)
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (50, 70), dtype=np.uint8)).save(tmp_path / "a.png")
    masks = [np.asarray(Image.open(predict(model, [tmp_path / "a.png"], tmp_path / name,
                                           options=InferOptions(tile=32), progress=False)[0]))
             for model, name in ((checkpoint, "pt"), (tmp_path / "fixed.onnx", "onnx"))]
    assert masks[0].shape == (50, 70) and (masks[0] == masks[1]).mean() >= 0.995


def test_metadata_round_trip_and_binary_model(tmp_path: Path) -> None:
    data = {"classes": ["sky", "road", "car"], "channels": 3, "mean": [0.4, 0.5, 0.6], "std": [0.2, 0.2, 0.3]}
    checkpoint, _ = _checkpoint(tmp_path, SAME, data)
    path = export_model(checkpoint, tmp_path / "three.onnx", check=False)
    meta = {p.key: p.value for p in onnx.load(path).metadata_props}
    assert meta["unetkit.format"] == "unetkit-onnx" and json.loads(meta["unetkit.classes"]) == ["sky", "road", "car"]
    assert (meta["unetkit.out_channels"], meta["unetkit.margin"], meta["unetkit.stride"]) == ("3", "0", "4")
    cfg, channels, fixed = read_metadata(meta, str(path))
    assert cfg == config_from_dict({"data": data, "model": SAME}) and (channels, fixed) == (3, None)
    # a one-logit BCE model gives two probabilities, as the checkpoint's Predictor does
    binary, _ = _checkpoint(tmp_path, SAME, loss={"terms": [{"name": "bce"}]})
    predictor, _ = load_onnx(export_model(binary, tmp_path / "bce.onnx"))
    probs = predictor(torch.randn(1, 1, 16, 16))
    assert probs.shape == (1, 2, 16, 16)
    torch.testing.assert_close(probs.sum(1), torch.ones(1, 16, 16))


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")
def test_torchscript_export_loads_with_its_metadata(tmp_path: Path) -> None:
    checkpoint, net = _checkpoint(tmp_path, VALID)
    path = export_model(checkpoint, tmp_path / "model.ts", fmt="torchscript")
    keys = ("format", "version", "config", "classes", "out_channels", "margin", "stride", "input_size")
    extra = {f"unetkit.{key}": "" for key in keys}
    loaded = torch.jit.load(path, _extra_files=extra)
    meta = {key: value.decode() for key, value in extra.items()}
    assert meta["unetkit.format"] == "unetkit-torchscript" and meta["unetkit.margin"] == "20"
    assert json.loads(meta["unetkit.classes"]) == ["background", "membrane"]
    cfg, channels, fixed = read_metadata(meta, str(path), expected="unetkit-torchscript")
    assert (cfg.model.padding, channels, fixed) == ("valid", 2, None)
    for size in ((44, 60), (76, 52)):
        x = torch.randn(2, 1, *size)
        torch.testing.assert_close(loaded(x), net(x), atol=1e-4, rtol=0)


def test_foreign_files_are_refused(tmp_path: Path) -> None:
    (tmp_path / "notes.onnx").write_text("not a model\n")
    with pytest.raises(UnetkitError, match="notes.onnx is not a readable ONNX model"):
        load_predictor(tmp_path / "notes.onnx")
    node = onnx.helper.make_node("Identity", ["x"], ["y"])
    value = onnx.helper.make_tensor_value_info
    graph = onnx.helper.make_graph([node], "g", [value("x", 1, [1])], [value("y", 1, [1])])
    onnx.save(onnx.helper.make_model(graph), tmp_path / "other.onnx")
    with pytest.raises(UnetkitError, match="not exported by unetkit"):
        load_onnx(tmp_path / "other.onnx")
    with pytest.raises(UnetkitError, match="does not exist"):
        load_onnx(tmp_path / "missing.onnx")


def test_failed_check_writes_nothing_and_bad_options_are_refused(tmp_path: Path, monkeypatch) -> None:
    checkpoint, _ = _checkpoint(tmp_path, SAME)
    original = export._exported_logits
    monkeypatch.setattr(export, "_exported_logits", lambda *a: original(*a) + 0.01)  # logits here are ~1
    with pytest.raises(UnetkitError, match="differ from PyTorch's by 1.00e-02"):
        export_model(checkpoint, tmp_path / "bad.onnx")
    assert not list(tmp_path.glob("*bad.onnx*"))
    for options, message in (({"fmt": "tflite"}, "unknown"), ({"opset": 7}, "opset 7"), ({"tile": 0}, "tile 0")):
        with pytest.raises(UnetkitError, match=message):
            export_model(checkpoint, tmp_path / "x.onnx", **options)


def test_missing_onnxruntime_says_how_to_install(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # makes `import onnxruntime` fail
    with pytest.raises(UnetkitError, match=r"pip install 'unetkit\[onnx\]'"):
        require("onnxruntime")


def test_resnet18_encoder_unet_exports(tmp_path: Path) -> None:
    checkpoint, net = _checkpoint(tmp_path, {"name": "encoder_unet", "encoder": "resnet18"},
                                  {"channels": 3, "classes": ["a", "b", "c"]})
    predictor, _ = load_onnx(export_model(checkpoint, tmp_path / "resnet18.onnx"))  # checked at 96x128
    assert (predictor.margin, predictor.stride, predictor.input_size_for(65)) == (0, 32, 96)
    x = torch.randn(1, 3, 64, 96)
    torch.testing.assert_close(predictor.logits(x), net(x).detach(), atol=1e-4, rtol=0)
