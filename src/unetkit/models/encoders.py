"""U-Nets on classification encoders (ResNet, VGG, Inception, EfficientNet, any timm model) via smp.

`EncoderUNet` is segmentation_models_pytorch's `Unet` with the size rule the rest of unetkit reads (`margin`,
`depth`, `output_size`, ...), so crops, tiling and TTA treat it like a "same"-padded U-Net. Encoder names are
smp's (`resnet34`, `vgg16`, `inceptionresnetv2`, `efficientnet-b0`) or timm's as `tu-<name>` (Inception v3 is
`tu-inception_v3`). Weights come from smp's hub ("imagenet") or a local file; offline, the hub gives one line
saying how to pass a file, within seconds rather than after its client's retries (`encoder_weights.py`). smp is
imported inside the functions: it takes about 2 s and plain U-Net runs do not need it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import torch
from torch import Tensor, nn

from unetkit.errors import UnetkitError
from unetkit.models.encoder_weights import check_names, fetch_from_hub, is_weights_file, load_encoder_weights

IMAGENET = {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}  # on [0, 1] pixels
_DECODER_CHANNELS = (256, 128, 64, 32, 16)  # smp's default; the first `depth` entries are used


class EncoderUNet(nn.Module):
    """smp.Unet with the geometry attributes the rest of unetkit relies on.

    `(N, in_channels, H, W)` -> logits `(N, num_classes, H, W)` for H, W multiples of 2**depth (32) from
    `min_size` on: the smallest side whose deepest feature map is at least 2x2, so BatchNorm can train on a
    single image. That is 64 for most encoders and 128 for timm's Inception v3, whose stems are unpadded;
    it is found once by tiny forward passes at construction.
    """

    margin = 0  # every convolution is padded

    def __init__(self, encoder: str, in_channels: int, num_classes: int, weights: str = "none", depth: int = 5) -> None:
        super().__init__()
        import segmentation_models_pytorch as smp

        if not 3 <= depth <= 5:
            raise UnetkitError(f"encoder U-Net depth must be 3, 4 or 5, got {depth}")
        check_names(encoder, weights)
        from_hub = weights != "none" and not is_weights_file(weights)

        def make() -> nn.Module:
            hub_weights: str | bool | None = (True if encoder.startswith("tu-") else weights) if from_hub else None
            return smp.Unet(encoder, encoder_depth=depth, encoder_weights=hub_weights, in_channels=in_channels,
                            classes=num_classes, decoder_channels=_DECODER_CHANNELS[:depth])

        net = fetch_from_hub(make, encoder, weights) if from_hub else make()
        # smp's names, so smp's own checkpoints load; the straight-line forward below replaces smp's.
        self.encoder, self.decoder, self.segmentation_head = net.encoder, net.decoder, net.segmentation_head
        if weights != "none" and not from_hub:
            load_encoder_weights(self.encoder, Path(weights).expanduser())
        self.encoder_name, self.pretrained, self.depth, self.encoder_frozen = encoder, weights != "none", depth, False
        self.min_size = self._smallest_input(in_channels)

    def forward(self, x: Tensor) -> Tensor:
        """`(N, C, H, W)` -> logits `(N, num_classes, H, W)`; the decoder concatenates encoder features."""
        if not torch.jit.is_scripting():
            self.check_input(x.shape[-2], x.shape[-1])
        features = self.encoder(x)  # [x, (N, c1, H/2, W/2), ..., (N, c_depth, H/2**depth, W/2**depth)]
        return self.segmentation_head(self.decoder(features))

    @torch.no_grad()
    def _smallest_input(self, in_channels: int, tries: int = 8) -> int:
        step, mode = 2**self.depth, self.training
        self.eval()  # BatchNorm in training mode refuses a 1x1 bottleneck
        try:
            for size in range(step, step * (tries + 1), step):
                try:
                    features = self.encoder(torch.zeros(1, in_channels, size, size))
                    self.segmentation_head(self.decoder(features))
                except (RuntimeError, ValueError):  # a kernel larger than a shrunken map
                    continue
                if min(features[-1].shape[-2:]) >= 2:  # BatchNorm needs 2 values per channel to train
                    return size
        finally:
            self.train(mode)
        raise RuntimeError(f"encoder {self.encoder_name} takes no input up to {step * tries} pixels")

    def train(self, mode: bool = True) -> EncoderUNet:
        """As nn.Module.train, but a frozen encoder stays in eval mode: its BatchNorm statistics stay frozen too."""
        super().train(mode)
        if self.encoder_frozen:
            self.encoder.eval()
        return self

    def encoder_parameters(self) -> Iterator[nn.Parameter]:
        return self.encoder.parameters()

    def fresh_modules(self) -> list[nn.Module]:
        """The layers no weights file filled (for the paper's He init): all of them without pretraining."""
        return [self.decoder, self.segmentation_head] if self.pretrained else [self]

    # Size rule, per spatial dimension: positive multiples of 2**depth from `min_size` on.

    @property
    def stride(self) -> int:
        return 2**self.depth

    def is_valid_input(self, input_size: int) -> bool:
        return input_size >= self.min_size and input_size % self.stride == 0

    def nearest_valid_sizes(self, input_size: int) -> tuple[int | None, int]:
        """(largest valid size <= input_size or None, smallest valid size >= input_size): 65 -> (64, 96)."""
        step = 2**self.depth
        below = input_size // step * step
        above = max(-(-input_size // step) * step, self.min_size)
        return (below if below >= self.min_size else None), above

    def output_size(self, input_size: int) -> int:
        if not self.is_valid_input(input_size):
            raise UnetkitError(f"input size {input_size} does not fit this {self.encoder_name} U-Net; "
                               + self._size_hint(input_size))
        return input_size

    def input_size_for(self, output_size: int) -> int:
        """Smallest valid input covering `output_size` pixels: the next multiple of 2**depth (65 -> 96)."""
        return self.nearest_valid_sizes(max(output_size, 1))[1]

    def check_input(self, height: int, width: int) -> None:
        for name, size in (("height", height), ("width", width)):
            if not self.is_valid_input(size):
                raise UnetkitError(f"input {height}x{width} does not fit this {self.encoder_name} U-Net: {name} "
                                   f"{size} is invalid, {self._size_hint(size)}; crop or pad the image")

    def _size_hint(self, input_size: int) -> str:
        below, above = self.nearest_valid_sizes(input_size)
        return f"use {above} or more" if below is None else f"nearest valid sizes are {below} and {above}"


def set_encoder_frozen(model: nn.Module, frozen: bool) -> None:
    """Freeze (no gradients, BatchNorm statistics fixed) or release the pretrained encoder, e.g. for the first
    `model.freeze_encoder_epochs` epochs so the random decoder does not wreck it. No-op for other models."""
    if not isinstance(model, EncoderUNet):
        return
    for param in model.encoder_parameters():
        param.requires_grad_(not frozen)
    model.encoder_frozen = frozen
    model.train(model.training)


def encoder_normalization(encoder: str, weights: str, channels: int = 3) -> tuple[list[float], list[float]] | None:
    """(mean, std) per channel on [0, 1] pixels that the encoder's pretrained weights expect; None without them.

    Named weights use smp's preprocessing parameters (timm's table for `tu-` encoders). For a local file
    ImageNet statistics are assumed, except for `tu-` encoders whose timm table is known offline. With one
    input channel the first convolution sums the RGB filters, so the channel averages are returned.
    """
    if weights == "none":
        return None
    import segmentation_models_pytorch as smp
    from timm.models import is_model_pretrained as timm_pretrained

    params = IMAGENET
    if encoder.startswith("tu-") and timm_pretrained(encoder[3:]):
        params = smp.encoders.get_preprocessing_params(encoder)  # timm's table: no download
    elif not encoder.startswith("tu-") and not is_weights_file(weights):
        check_names(encoder, weights)
        params = fetch_from_hub(lambda: smp.encoders.get_preprocessing_params(encoder, weights), encoder, weights)
    scale = float(params.get("input_range", [0, 1])[1])  # some tables are on 0..255 pixels
    mean = [float(m) / scale for m in params["mean"]]
    std = [float(s) / scale for s in params["std"]]
    if channels == 1:
        return [sum(mean) / len(mean)], [sum(std) / len(std)]
    return mean, std
