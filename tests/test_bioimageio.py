"""bioimage.io model packages: the package validates with bioimageio.spec, bioimageio.core's model test reproduces
its test output from its test input, the description says what the network and unetkit's preprocessing do, and
`predict model.zip` gives the masks of the checkpoint it came from."""

import io
import json
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
import yaml
from extras import require as require_extra
from PIL import Image

from unetkit.checkpoint import make_checkpoint, out_channels, save_checkpoint
from unetkit.cli import main
from unetkit.config import config_from_dict
from unetkit.data.source import make_prepare
from unetkit.errors import UnetkitError
from unetkit.infer.inference import InferOptions
from unetkit.infer.package_backend import load_package, require
from unetkit.infer.predict import predict
from unetkit.models.build import build_model
from unetkit.sharing.package import PackageOptions, export_bioimageio

spec = require_extra("bioimageio.spec")
core = require_extra("bioimageio.core")
require_extra("onnxruntime")

SUMMARY = {"best_epoch": 7, "epochs": 9, "seconds": 41.5, "threshold": 0.35, "min_object_px": 16, "tta": "none",
           "best": {"miou": 0.8123, "mean_dice": 0.8861, "per_class": {"background": {"iou": 0.9512, "dice": 0.975},
                                                                       "membrane": {"iou": 0.6734, "dice": 0.8047}}},
           "after_choices": {"miou": 0.8299}}
KINDS = {
    # the paper's network, one logit (BCE): sigmoid; its test image is the run's 32x32 PNG, mirrored out to 44
    "valid": ({"padding": "valid", "depth": 2, "base_channels": 4, "init": "he"},
              {"classes": ["background", "membrane"], "mask": {"encoding": "binary"}, "mean": [0.4], "std": [0.3]},
              {"loss": {"terms": [{"name": "bce"}]}}),
    # padded with batch norm, 3 classes: softmax; a 16-bit TIFF as the test image
    "same_bn": ({"padding": "same", "depth": 2, "base_channels": 4, "batch_norm": True},
                {"classes": ["background", "cell", "fibre"]}, {}),
    # the smallest smp encoder, MobileNetV2 (random init), RGB, each image stretched by its own percentiles
    "encoder": ({"name": "encoder_unet", "encoder": "mobilenet_v2"},
                {"channels": 3, "classes": ["a", "b"], "normalize": "image", "mean": [0.5, 0.4, 0.3],
                 "std": [0.2, 0.25, 0.3]}, {}),
}


def _checkpoint(folder: Path, kind: str) -> tuple[Path, torch.nn.Module]:
    model, data, sections = KINDS[kind]
    (folder / "data" / "train" / "images").mkdir(parents=True)
    cfg = config_from_dict({"data": {"root": str(folder / "data"), "train_images": "train/images", **data},
                            "model": model, **sections})
    torch.manual_seed(0)
    net = build_model(cfg.model, cfg.data.channels, out_channels(cfg), pretrained=False)
    if cfg.model.batch_norm:  # statistics other than 0 / 1, so the packaged weights must carry them
        for module in net.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.2, 0.2)
                module.running_var.uniform_(0.5, 2.0)
    run = folder / "runs" / f"{kind}-run"
    run.mkdir(parents=True)
    save_checkpoint(make_checkpoint(net.eval(), cfg, epoch=0), run / "best.pt")
    return run / "best.pt", net


def _samples(folder: Path) -> dict[str, Path | None]:
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:32, :32]
    disk = np.where((yy - 14) ** 2 + (xx - 17) ** 2 < 64, 200, 40) + rng.integers(-20, 21, (32, 32))
    Image.fromarray(disk.astype(np.uint8)).save(folder / "valid" / "data" / "train" / "images" / "a.png")
    tifffile.imwrite(folder / "gray16.tif", rng.integers(0, 4000, (70, 66)).astype(np.uint16))
    Image.fromarray(rng.integers(0, 256, (72, 80, 3)).astype(np.uint8)).save(folder / "rgb.png")
    return {"valid": None, "same_bn": folder / "gray16.tif", "encoder": folder / "rgb.png"}


@pytest.fixture(scope="module")
def packages(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path, torch.nn.Module]]:
    """kind -> (checkpoint, package, network) for the three kinds, built once."""
    root = tmp_path_factory.mktemp("packages")
    built = {kind: _checkpoint(root / kind, kind) for kind in KINDS}
    samples = _samples(root)
    (built["valid"][0].parent / "summary.json").write_text(json.dumps(SUMMARY))
    result = {}
    for kind, (checkpoint, net) in built.items():
        options = PackageOptions(authors=("Ada Lovelace",), sample=samples[kind], license="CC-BY-4.0")
        result[kind] = (checkpoint, export_bioimageio(checkpoint, root / f"{kind}.zip", options), net)
    return result


def _rdf(package: Path) -> dict:
    with zipfile.ZipFile(package) as z:
        return yaml.safe_load(z.read("rdf.yaml"))


def _npy(package: Path, name: str) -> np.ndarray:
    with zipfile.ZipFile(package) as z:
        return np.load(io.BytesIO(z.read(name)))


@pytest.mark.parametrize("kind", list(KINDS))
def test_package_validates_and_reproduces_its_test_output(packages: dict, kind: str) -> None:
    _, package, _ = packages[kind]
    described = spec.load_description(package)
    summary = described.validation_summary
    assert summary.status == "valid-format", summary.format()
    assert [e.msg for e in summary.errors] == []
    # the one remark left is bioimage.io's wish for a GitHub account among the authors, not a missing field
    assert all("github_user" in w.msg for w in summary.warnings), [w.msg for w in summary.warnings]
    tested = core.test_model(package)
    assert tested.status == "passed", tested.format()
    checks = [d.name for d in tested.details]
    assert "Reproduce test outputs from test inputs (onnx)" in checks
    assert "Reproduce test outputs from test inputs (torchscript)" in checks


def test_description_follows_the_network_and_the_preprocessing(packages: dict) -> None:
    expected = {  # kind: (size min, step, output offset, preprocessing ids, postprocessing, output channels)
        "valid": (44, 4, -40, ["ensure_dtype", "scale_linear", "fixed_zero_mean_unit_variance", "ensure_dtype"],
                  "sigmoid", ["membrane"]),
        "same_bn": (4, 4, 0, ["ensure_dtype", "scale_linear", "fixed_zero_mean_unit_variance", "ensure_dtype"],
                    "softmax", ["background", "cell", "fibre"]),
        "encoder": (64, 32, 0, ["ensure_dtype", "scale_range", "clip", "fixed_zero_mean_unit_variance",
                               "ensure_dtype"], "softmax", ["a", "b"]),
    }
    for kind, (low, step, offset, pre, post, names) in expected.items():
        _, package, net = packages[kind]
        assert (net.input_size_for(1), net.stride, -2 * net.margin) == (low, step, offset)
        rdf = _rdf(package)
        inp, out = rdf["inputs"][0], rdf["outputs"][0]
        assert [a.get("id", a["type"]) for a in inp["axes"]] == ["batch", "channel", "y", "x"]
        assert inp["axes"][2]["size"] == {"min": low, "step": step}
        assert out["axes"][3]["size"] == {"tensor_id": "image", "axis_id": "x", "offset": offset}
        assert [p["id"] for p in inp["preprocessing"]] == pre
        assert [p["id"] for p in out["postprocessing"]] == [post, "ensure_dtype"]
        assert out["axes"][1]["channel_names"] == names
        assert set(rdf["weights"]) == {"onnx", "torchscript"} and rdf["license"] == "CC-BY-4.0"
        dois = [c["doi"] for c in rdf["cite"]]
        assert dois == ["10.1007/978-3-319-24574-4_28"] + (["10.1109/CVPR.2018.00474"] if kind == "encoder" else [])
    valid = _rdf(packages["valid"][1])["inputs"][0]["preprocessing"]
    assert valid[1]["kwargs"] == {"gain": pytest.approx(1 / 255)}
    assert valid[2]["kwargs"] == {"mean": 0.4, "std": 0.3}
    assert _rdf(packages["same_bn"][1])["inputs"][0]["preprocessing"][1]["kwargs"] == {"gain": pytest.approx(1 / 65535)}
    stretch = _rdf(packages["encoder"][1])["inputs"][0]["preprocessing"][1]["kwargs"]
    assert (stretch["axes"], stretch["min_percentile"], stretch["max_percentile"]) == (["y", "x"], 0.5, 99.5)


@pytest.mark.parametrize("kind", list(KINDS))
def test_test_tensors_are_the_checkpoints_probabilities_on_the_raw_sample(packages: dict, kind: str) -> None:
    checkpoint, package, net = packages[kind]
    raw, expected = _npy(package, "test_input.npy"), _npy(package, "test_output.npy")
    cfg = load_package(package, "cpu")[1]
    image = raw[0].transpose(1, 2, 0)  # (h, w, C) raw pixels, in the sample file's own type
    assert image.dtype == {"valid": np.uint8, "same_bn": np.uint16, "encoder": np.uint8}[kind]
    with torch.no_grad():
        logits = net.eval()(make_prepare(cfg.data, image)(image)[None])
    probs = torch.sigmoid(logits) if logits.shape[1] == 1 else torch.softmax(logits, dim=1)
    assert expected.shape == probs.shape and raw.shape[-1] - 2 * net.margin == expected.shape[-1]
    torch.testing.assert_close(torch.from_numpy(expected), probs, atol=1e-5, rtol=0)
    with zipfile.ZipFile(package) as z:
        cover = np.asarray(Image.open(io.BytesIO(z.read("cover.png"))))
        assert cover.shape == (expected.shape[2], 2 * expected.shape[3], 3)


def test_readme_carries_the_runs_training_data_and_validation_scores(packages: dict) -> None:
    with zipfile.ZipFile(packages["valid"][1]) as z:
        text = z.read("README.md").decode()
    assert "## Validation" in text and "## Training data" in text
    assert "best epoch (7 of 9)" in text and "mIoU 0.8123" in text and "| membrane | 0.6734 | 0.8047 |" in text
    assert "mIoU 0.8299" in text and "membrane" in text and "doi:10.1007/978-3-319-24574-4_28" in text
    with zipfile.ZipFile(packages["same_bn"][1]) as z:
        assert "No summary.json was found" in z.read("README.md").decode()


def test_predict_with_the_package_gives_the_checkpoints_masks(packages: dict, tmp_path: Path) -> None:
    checkpoint, package, _ = packages["valid"]
    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[:70, :90]
    image = np.where((yy - 30) ** 2 + (xx - 50) ** 2 < 400, 190, 60) + rng.integers(-30, 31, (70, 90))
    Image.fromarray(image.astype(np.uint8)).save(tmp_path / "cells.png")
    options = InferOptions(tile=24, tta="flips")  # tiled, with test-time flips
    masks = [np.asarray(Image.open(predict(source, [tmp_path / "cells.png"], tmp_path / name, options=options,
                                           progress=False)[0])) for source, name in ((checkpoint, "pt"),
                                                                                     (package, "zip"))]
    assert masks[0].shape == (70, 90)
    assert 0.05 < (masks[0] == 255).mean() < 0.95  # both classes occur: the comparison means something
    assert (masks[0] == masks[1]).mean() >= 0.999


def test_foreign_zips_and_a_missing_extra_are_one_line(tmp_path: Path, packages: dict, monkeypatch) -> None:
    (tmp_path / "junk.zip").write_bytes(b"not a zip")
    with pytest.raises(UnetkitError, match="is not a zip file"):
        load_package(tmp_path / "junk.zip")
    with zipfile.ZipFile(tmp_path / "photos.zip", "w") as z:
        z.writestr("a.txt", "hello")
    with pytest.raises(UnetkitError, match="is not a bioimage.io model package"):
        load_package(tmp_path / "photos.zip")
    foreign = tmp_path / "foreign.zip"  # a valid package whose weights unetkit did not write
    with zipfile.ZipFile(packages["same_bn"][1]) as src, zipfile.ZipFile(foreign, "w") as dst:
        for item in src.namelist():
            data = src.read(item)
            if item == "weights.onnx":
                import onnx

                model = onnx.load_from_string(data)
                del model.metadata_props[:]
                data = model.SerializeToString()
            dst.writestr(item, data)
    with pytest.raises(UnetkitError, match="not one unetkit exported"):
        load_package(foreign)
    with pytest.raises(UnetkitError, match=r"-o .*model\.onnx: a bioimage.io package is a \.zip"):
        export_bioimageio(packages["valid"][0], tmp_path / "model.onnx")
    with pytest.raises(UnetkitError, match="not an SPDX licence id"):
        export_bioimageio(packages["valid"][0], tmp_path / "x.zip", PackageOptions(license="not a licence"))
    monkeypatch.setitem(sys.modules, "bioimageio.spec", None)  # makes `import bioimageio.spec` fail
    with pytest.raises(UnetkitError, match=r"^[^\n]*pip install 'unetkit\[bioimageio\]'$"):
        require("bioimageio.spec")
    with pytest.raises(UnetkitError, match=r"pip install 'unetkit\[bioimageio\]'"):
        export_bioimageio(packages["valid"][0], tmp_path / "y.zip")


def test_cli_refuses_bad_package_options_in_one_line(packages: dict, tmp_path: Path, capsys) -> None:
    checkpoint = str(packages["valid"][0])
    for extra, message in ((["--license", "GPL-4"], "--license 'GPL-4' is not an SPDX licence id"),
                           (["--tile", "32"], "--tile is for onnx and torchscript"),
                           (["--name", "U/Net"], "--name 'U/Net'")):
        assert main(["export", checkpoint, "--format", "bioimageio", "-o", str(tmp_path / "m.zip"), *extra]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1
    assert not (tmp_path / "m.zip").exists()
