"""U-Nets on smp encoders: shapes, the size rule, weight files, offline failures, freezing, normalization.

Random init only; nothing here downloads (the hub download function is replaced where smp would call it).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import segmentation_models_pytorch as smp
import torch
from model_table import encoder_rows
from pydantic import ValidationError
from safetensors.torch import save_file

from unetkit.config import ModelConfig, config_from_dict
from unetkit.errors import UnetkitError
from unetkit.infer.predictor import Predictor, predict_whole
from unetkit.models import build_model
from unetkit.models import encoder_weights as enc
from unetkit.models.encoders import EncoderUNet, encoder_normalization, set_encoder_frozen
from unetkit.models.unet import UNet

# Encoder name -> smallest input side, from the shared model table (`tests/model_table.py`): where the deepest map
# is 2x2 so BatchNorm trains on one image, 64 = 2 * 32 for padded encoders. Timm's Inception v3 has unpadded stems:
# 64 leaves a 2x4 map for a 3x3 kernel and 96 a 1x1 bottleneck, so 128. Add a row there and every test below
# covers the new encoder.
ENCODER_MIN_SIZES = encoder_rows()
Writer = Callable[[EncoderUNet, Path], None]


@pytest.fixture(scope="module")
def resnet18() -> EncoderUNet:
    return EncoderUNet("resnet18", 3, 2)


@pytest.fixture(scope="module")
def weights_file(resnet18: EncoderUNet, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("weights") / "resnet18.pth"
    torch.save(resnet18.encoder.state_dict(), path)
    return path


@pytest.mark.parametrize(("encoder", "min_size"), ENCODER_MIN_SIZES)
def test_table_forward_shape_and_smallest_input(encoder: str, min_size: int) -> None:
    model = EncoderUNet(encoder, 1, 3).eval()
    assert model.min_size == min_size
    assert model.nearest_valid_sizes(1) == (None, min_size)
    with torch.no_grad():
        y = model(torch.rand(1, 1, min_size, min_size + 32))
    assert y.shape == (1, 3, min_size, min_size + 32)
    with pytest.raises(UnetkitError, match=f"use {min_size} or more"):
        model(torch.rand(1, 1, min_size - 32, min_size))
    assert model.train()(torch.rand(1, 1, min_size, min_size)).shape == (1, 3, min_size, min_size)  # BatchNorm


def test_rgb_forward_and_size_rule_is_multiples_of_32(resnet18: EncoderUNet) -> None:
    with torch.no_grad():  # the table above covers one input channel
        assert resnet18.eval()(torch.rand(2, 3, 64, 96)).shape == (2, 2, 64, 96)
    assert resnet18.depth == 5 and resnet18.margin == 0
    assert resnet18.is_valid_input(64) and not resnet18.is_valid_input(65)
    assert resnet18.output_size(64) == 64
    assert resnet18.nearest_valid_sizes(65) == (64, 96)
    assert resnet18.nearest_valid_sizes(40) == (None, 64) and not resnet18.is_valid_input(32)
    assert resnet18.input_size_for(65) == 96 and resnet18.input_size_for(64) == 64
    with pytest.raises(UnetkitError, match="64 and 96"):
        resnet18.output_size(65)
    with pytest.raises(UnetkitError, match="width 70 is invalid, nearest valid sizes are 64 and 96"):
        resnet18.check_input(64, 70)


def _full_model_safetensors(model: EncoderUNet, path: Path) -> None:
    # A whole smp/unetkit model: `encoder.` keys plus decoder keys the encoder must ignore.
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, path)


def _wrapped_pth(model: EncoderUNet, path: Path) -> None:
    # A DataParallel-era training checkpoint: {"state_dict": {"module.encoder.<key>": ...}}.
    torch.save({"state_dict": {f"module.encoder.{k}": v for k, v in model.encoder.state_dict().items()}}, path)


@pytest.mark.parametrize(("writer", "name"), [(_full_model_safetensors, "m.safetensors"), (_wrapped_pth, "m.pth")])
def test_weights_file_round_trip(resnet18: EncoderUNet, tmp_path: Path, writer: Writer, name: str) -> None:
    writer(resnet18, tmp_path / name)
    loaded = EncoderUNet("resnet18", 3, 2, weights=str(tmp_path / name))
    for (key, a), b in zip(resnet18.encoder.state_dict().items(), loaded.encoder.state_dict().values(), strict=True):
        assert torch.equal(a, b), key
    assert not torch.equal(resnet18.segmentation_head[0].weight, loaded.segmentation_head[0].weight)


def test_weights_file_into_gray_model_sums_first_conv(resnet18: EncoderUNet, weights_file: Path) -> None:
    gray = EncoderUNet("resnet18", 1, 2, weights=str(weights_file))
    rgb_conv = resnet18.encoder.conv1.weight  # (64, 3, 7, 7)
    assert gray.encoder.conv1.weight.shape == (64, 1, 7, 7)
    assert torch.allclose(gray.encoder.conv1.weight, rgb_conv.sum(1, keepdim=True))
    assert torch.equal(gray.encoder.layer4[1].conv2.weight, resnet18.encoder.layer4[1].conv2.weight)


def test_torchvision_and_timm_files_load(tmp_path: Path) -> None:
    import timm
    import torchvision

    tv = torchvision.models.resnet18()  # keys as torchvision saves them, with an fc head the encoder lacks
    state = {k: v for k, v in tv.state_dict().items() if not k.endswith("num_batches_tracked")}  # pre-0.4 file
    torch.save(state, tmp_path / "tv.pth")
    model = EncoderUNet("resnet18", 3, 2, weights=str(tmp_path / "tv.pth"))
    assert torch.equal(model.encoder.layer3[0].conv1.weight, tv.layer3[0].conv1.weight)

    tm = timm.create_model("resnet18")  # sits under `model.` inside smp's timm wrapper
    torch.save(tm.state_dict(), tmp_path / "timm.pth")
    model = EncoderUNet("tu-resnet18", 3, 2, weights=str(tmp_path / "timm.pth"))
    assert torch.equal(model.encoder.model.layer3[0].conv1.weight, tm.layer3[0].conv1.weight)


def test_bad_weights_files(resnet18: EncoderUNet, tmp_path: Path) -> None:
    torch.save({f"backbone.{k}": v for k, v in resnet18.encoder.state_dict().items()}, tmp_path / "other.pth")
    # resnet18's encoder: 60 parameters and 40 running statistics (20 BatchNorms); none is named alike here.
    with pytest.raises(UnetkitError, match=r"other.pth matched 0 of 100 weights"):
        EncoderUNet("resnet18", 3, 2, weights=str(tmp_path / "other.pth"))
    # Without layer4 (2 blocks of 6 + 4, a downsample of 3 + 2): 75 of 100, under the 90% needed.
    torch.save({k: v for k, v in resnet18.encoder.state_dict().items() if not k.startswith("layer4")},
               tmp_path / "part.pth")
    with pytest.raises(UnetkitError, match=r"part.pth matched 75 of 100 weights"):
        EncoderUNet("resnet18", 3, 2, weights=str(tmp_path / "part.pth"))
    with pytest.raises(UnetkitError, match="does not exist"):
        EncoderUNet("resnet18", 3, 2, weights=str(tmp_path / "missing.pth"))
    (tmp_path / "text.pth").write_text("not a tensor file")
    with pytest.raises(UnetkitError, match="cannot read"):
        EncoderUNet("resnet18", 3, 2, weights=str(tmp_path / "text.pth"))


def test_unknown_encoder_and_weight_kind() -> None:
    with pytest.raises(UnetkitError, match="did you mean .*resnet34"):
        EncoderUNet("resnet35", 3, 2)
    with pytest.raises(UnetkitError, match=r"has pretrained weights \['imagenet'\] only"):
        EncoderUNet("resnet34", 3, 2, weights="ssl")


@pytest.mark.parametrize("probe", [None, "huggingface.co: Name or service not known"])
def test_imagenet_offline_is_one_line(monkeypatch: pytest.MonkeyPatch, probe: str | None) -> None:
    from huggingface_hub import constants

    calls: list[str] = []

    def no_network(repo_id: str, filename: str, **kwargs: object) -> str:
        calls.append(filename)
        raise ConnectionError("connection refused")

    monkeypatch.setattr(smp.encoders, "hf_hub_download", no_network)
    monkeypatch.setattr(enc, "_hub_unreachable", lambda: probe)
    offline_before = constants.HF_HUB_OFFLINE
    with pytest.raises(UnetkitError) as err:
        EncoderUNet("resnet18", 3, 2, weights="imagenet")
    message = str(err.value)
    assert "\n" not in message and calls == ["config.json"]
    assert f"({probe or 'connection refused'})" in message
    assert "--set model.encoder_weights=/path/to/resnet18.pth" in message
    assert constants.HF_HUB_OFFLINE == offline_before


def test_offline_hub_still_serves_cached_weights(
    resnet18: EncoderUNet, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from huggingface_hub import constants

    save_file(resnet18.encoder.state_dict(), tmp_path / "model.safetensors")
    (tmp_path / "config.json").write_text("{}")
    offline_seen: list[bool] = []

    def from_cache(repo_id: str, filename: str, **kwargs: object) -> str:
        offline_seen.append(constants.HF_HUB_OFFLINE)
        return str(tmp_path / filename)

    monkeypatch.setattr(smp.encoders, "hf_hub_download", from_cache)
    monkeypatch.setattr(enc, "_hub_unreachable", lambda: "huggingface.co: timed out")
    model = EncoderUNet("resnet18", 3, 2, weights="imagenet")
    assert offline_seen == [True, True]  # config.json, model.safetensors: asked of the cache only
    assert torch.equal(model.encoder.layer2[0].conv1.weight, resnet18.encoder.layer2[0].conv1.weight)


def test_build_without_pretrained_never_downloads(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(smp.encoders, "hf_hub_download", lambda *a, **k: pytest.fail("downloaded"))
    cfg = ModelConfig(name="encoder_unet", encoder="resnet18", encoder_weights="imagenet")
    assert isinstance(build_model(cfg, 3, 2, pretrained=False), EncoderUNet)


def test_he_init_keeps_pretrained_encoder(resnet18: EncoderUNet, weights_file: Path) -> None:
    cfg = ModelConfig(name="encoder_unet", encoder="resnet18", encoder_weights=str(weights_file), init="he")
    model = build_model(cfg, 3, 2)
    assert torch.equal(model.encoder.conv1.weight, resnet18.encoder.conv1.weight)
    assert not model.segmentation_head[0].bias.any()  # He init zeroes biases; smp's head init does not


def test_freeze_exactly_the_encoder() -> None:
    model = EncoderUNet("resnet18", 1, 2)
    n_encoder = sum(1 for _ in model.encoder_parameters())
    set_encoder_frozen(model, True)
    model.train()
    frozen = [n for n, p in model.named_parameters() if not p.requires_grad]
    assert len(frozen) == n_encoder == 60 and all(n.startswith("encoder.") for n in frozen)
    assert not model.encoder.training and model.decoder.training  # BatchNorm statistics stay fixed too
    model(torch.rand(2, 1, 64, 64)).sum().backward()
    assert model.encoder.conv1.weight.grad is None and model.segmentation_head[0].weight.grad is not None
    set_encoder_frozen(model, False)
    assert all(p.requires_grad for p in model.parameters()) and model.encoder.training

    unet = UNet(1, 2, depth=1, base_channels=2)
    set_encoder_frozen(unet, True)  # nothing to freeze
    assert all(p.requires_grad for p in unet.parameters())


def test_encoder_normalization(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert encoder_normalization("resnet34", "none") is None
    assert encoder_normalization("tu-inception_v3", "imagenet") == ([0.5] * 3, [0.5] * 3)  # timm's table
    # A local file: ImageNet statistics; one gray channel gets their averages, 1.347 / 3 and 0.678 / 3.
    assert encoder_normalization("resnet34", "/w/resnet34.pth") == ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
    mean, std = encoder_normalization("resnet34", "/w/resnet34.pth", channels=1)
    assert mean == pytest.approx([0.449]) and std == pytest.approx([0.226])

    # Named weights: smp's parameters, read from the hub's config.json (faked here), rescaled to [0, 1].
    config = tmp_path / "config.json"
    monkeypatch.setattr(smp.encoders, "hf_hub_download", lambda *a, **k: str(config))
    monkeypatch.setattr(enc, "_hub_unreachable", lambda: None)
    config.write_text(json.dumps({"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}))
    params = smp.encoders.get_preprocessing_params("resnet34", "imagenet")
    assert encoder_normalization("resnet34", "imagenet") == (params["mean"], params["std"])
    config.write_text(json.dumps({"mean": [127.5] * 3, "std": [51.0] * 3, "input_range": [0, 255]}))
    assert encoder_normalization("resnet34", "imagenet") == ([0.5] * 3, [0.2] * 3)


@pytest.mark.parametrize(
    "cfg",
    [
        ModelConfig(name="unet", padding="valid", depth=2, base_channels=4),
        ModelConfig(name="unet", padding="same", depth=2, base_channels=4),
        ModelConfig(name="encoder_unet", encoder="resnet18"),
    ],
    ids=["unet-valid", "unet-same", "encoder_unet-resnet18"],
)
def test_shared_inference_path_on_an_odd_image(cfg: ModelConfig) -> None:
    predictor = Predictor(build_model(cfg, 1, 3), torch.device("cpu"))
    probs = predict_whole(predictor, torch.rand(1, 1, 45, 70))
    assert probs.shape == (1, 3, 45, 70)
    assert torch.allclose(probs.sum(1), torch.ones(1, 45, 70), atol=1e-5)


def test_config_rejects_valid_padding_for_encoder_unet() -> None:
    with pytest.raises(ValidationError, match="encoder_unet is always padded"):
        ModelConfig(name="encoder_unet", padding="valid")
    with pytest.raises(UnetkitError, match="set model.padding=same"):
        config_from_dict({"model": {"name": "encoder_unet", "padding": "valid"}})
    assert config_from_dict({"model": {"name": "encoder_unet"}}).model.encoder == "resnet34"
