"""The one place a `ModelConfig` becomes constructor arguments.

Each model family has a small builder in `_BUILDERS`, keyed by `cfg.name`; adding a family means adding one
entry. The channel counts come from the data and loss config, so the caller passes them in.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from unetkit.config import ModelConfig
from unetkit.errors import UnetkitError
from unetkit.models.encoders import EncoderUNet
from unetkit.models.unet import UNet


def _build_unet(cfg: ModelConfig, in_channels: int, out_channels: int) -> nn.Module:
    return UNet(
        in_channels=in_channels,
        num_classes=out_channels,
        depth=cfg.depth,
        base_channels=cfg.base_channels,
        padding=cfg.padding,
        norm=cfg.norm,
        upsample=cfg.upsample,
        dropout=cfg.dropout,
        max_channels=cfg.max_channels,
    )


def _build_encoder_unet(cfg: ModelConfig, in_channels: int, out_channels: int) -> nn.Module:
    return EncoderUNet(cfg.encoder, in_channels, out_channels, cfg.encoder_weights)


def he_init(model: nn.Module) -> None:
    """The paper's initialisation: weights ~ N(0, 2 / N), N = incoming connections of a unit (k * k * C_in for
    a conv; PyTorch's fan-in for an up-convolution), so each ReLU layer keeps roughly unit variance. Biases 0."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d | nn.ConvTranspose2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_in", nonlinearity="relu")
            if module.bias is not None:
                nn.init.zeros_(module.bias)


_BUILDERS: dict[str, Callable[[ModelConfig, int, int], nn.Module]] = {
    "unet": _build_unet,
    "encoder_unet": _build_encoder_unet,
}


def build_model(cfg: ModelConfig, in_channels: int, out_channels: int, pretrained: bool = True) -> nn.Module:
    """Build the network described by `cfg`: `(N, in_channels, H, W)` -> logits `(N, out_channels, H', W')`.

    `out_channels` is 1 for a binary model trained with BCE, else the number of classes. `pretrained=False`
    skips `model.encoder_weights` (no download, no file): for loading a checkpoint that holds the weights.
    """
    builder = _BUILDERS.get(cfg.name)
    if builder is None:
        raise UnetkitError(f"model.name {cfg.name!r} is unknown; choose one of {sorted(_BUILDERS)}")
    if not pretrained:
        cfg = cfg.model_copy(update={"encoder_weights": "none"})
    model = builder(cfg, in_channels, out_channels)
    if cfg.init == "he":
        # Pretrained encoder weights are the point of encoder_unet; only its fresh layers get the paper's init.
        for module in model.fresh_modules() if isinstance(model, EncoderUNet) else [model]:
            he_init(module)
    return model
