"""The normalization after each convolution: batch, group or instance norm, and the older `batch_norm` key."""

from pathlib import Path

import pytest
import torch
from torch import nn

from unetkit.config import ModelConfig, load_config, save_config
from unetkit.errors import UnetkitError
from unetkit.models import UNet, build_model
from unetkit.models.unet import norm_layer


def _norms(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, nn.BatchNorm2d | nn.GroupNorm)]


@pytest.mark.parametrize(("kind", "channels", "groups"), [("group", 16, 4), ("group", 256, 32), ("group", 24, 6),
                                                          ("group", 2, 1), ("instance", 16, 16)])
def test_group_counts(kind: str, channels: int, groups: int) -> None:
    layer = norm_layer(kind, channels)  # type: ignore[arg-type]
    assert isinstance(layer, nn.GroupNorm) and layer.num_groups == groups and layer.num_channels == channels


@pytest.mark.parametrize("kind", ["group", "instance"])
def test_per_sample_norms_give_each_image_the_same_logits_in_any_batch_and_mode(kind: str) -> None:
    """Group and instance norm use one sample's own statistics: an image's logits do not depend on the other
    images of the batch, nor on train / eval mode (batch norm's do, which is what makes it fragile)."""
    torch.manual_seed(0)
    model = UNet(2, 3, depth=2, base_channels=8, padding="same", norm=kind)  # type: ignore[arg-type]
    assert len(_norms(model)) == 10 and all(isinstance(m, nn.GroupNorm) for m in _norms(model))
    x = torch.randn(3, 2, 32, 32)
    with torch.no_grad():
        batch_train = model.train()(x)
        alone_eval = model.eval()(x[1:2])
    torch.testing.assert_close(batch_train[1:2], alone_eval, rtol=1e-4, atol=1e-5)


def test_batch_norm_logits_depend_on_the_batch_in_training_mode() -> None:
    """The contrast the test above relies on: the same check fails for batch norm."""
    torch.manual_seed(0)
    model = UNet(2, 3, depth=2, base_channels=8, padding="same", norm="batch")
    x = torch.randn(3, 2, 32, 32)
    with torch.no_grad():
        assert not torch.allclose(model.train()(x)[1:2], model.eval()(x[1:2]), atol=1e-3)


def test_every_norm_drops_the_conv_biases_and_none_keeps_them() -> None:
    biases = {k: sum(isinstance(m, nn.Conv2d) and m.bias is not None for m in build_model(
        ModelConfig(padding="same", depth=1, base_channels=4, norm=k), 1, 2).modules())
        for k in ("none", "batch", "group", "instance")}
    assert biases == {"none": 7, "batch": 1, "group": 1, "instance": 1}  # 6 3x3 convs + the head; the head keeps it


@pytest.mark.parametrize(("given", "norm"), [({"batch_norm": True}, "batch"), ({"batch_norm": False}, "none"),
                                             ({"batch_norm": False, "norm": "group"}, "group"),
                                             ({"batch_norm": True, "norm": "instance"}, "batch"),
                                             ({"norm": "batch", "batch_norm": False}, "none")])
def test_the_older_batch_norm_key_reads_as_norm(given: dict, norm: str) -> None:
    model = ModelConfig(**given)
    assert model.norm == norm and model.batch_norm is (norm == "batch")
    assert "batch_norm" not in model.model_dump()


def test_a_norm_config_saved_to_yaml_reloads_the_same(tmp_path: Path) -> None:
    cfg = load_config(None, ["model.norm=group"])
    save_config(cfg, tmp_path / "c.yaml")
    again = load_config(tmp_path / "c.yaml", ["model.batch_norm=true"])  # the shorthand still overrides
    assert load_config(tmp_path / "c.yaml") == cfg and again.model.norm == "batch"
    with pytest.raises(UnetkitError, match="model.norm"):
        load_config(None, ["model.norm=layer"])
