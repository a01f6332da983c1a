"""The U-Net of Ronneberger, Fischer and Brox (MICCAI 2015), with the padded variant.

With `padding="valid"` every 3x3 convolution is unpadded, so each one trims a pixel from every side and the
output is smaller than the input: 572x572 -> 388x388 for the paper's network. The skip connections are
therefore larger than the upsampled path and are centre-cropped before concatenation. Only some input sizes
work (each pre-pool size must be even); the size rule is plain arithmetic, worked in `output_size`.

With `padding="same"` the convolutions keep their size and the output matches the input, for any input
divisible by 2**depth. Either way the model only validates sizes; padding an image to a valid size is the
job of the inference code.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

from unetkit.errors import UnetkitError


def center_crop(x: Tensor, height: int, width: int) -> Tensor:
    """Cut the central (height, width) window of x `(..., H, W)`: valid-padding skips are larger than the
    upsampled path, by an even amount, so the window is centred exactly."""
    top = (x.shape[-2] - height) // 2
    left = (x.shape[-1] - width) // 2
    return x[..., top : top + height, left : left + width]


Norm = Literal["none", "batch", "group", "instance"]


def norm_layer(kind: Norm, channels: int) -> nn.Module | None:
    """The normalization after a convolution, or None.

    batch norm averages over the batch, so its statistics are noisy with small batches and shift between
    training (batch) and inference (running means), most where acquisitions differ; group and instance norm
    average over each sample's own channels and pixels and behave the same in both modes. Group norm uses groups
    of 4 channels at most 32 groups (Wu and He, 2018: results hold from 4 to 32 channels per group); instance
    norm is one group per channel (what nnU-Net uses).
    """
    if kind == "none":
        return None
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    groups = channels if kind == "instance" else max(1, min(32, channels // 4))
    while channels % groups:
        groups -= 1
    return nn.GroupNorm(groups, channels)


class DoubleConv(nn.Sequential):
    """Two 3x3 convolutions, each followed by the optional normalization and ReLU: `(N, C_in, H, W)` ->
    `(N, C_out, H - 4, W - 4)` unpadded, or `(N, C_out, H, W)` padded."""

    def __init__(self, in_channels: int, out_channels: int, padding: int, norm: Norm) -> None:
        layers: list[nn.Module] = []
        for c_in in (in_channels, out_channels):
            # A normalization's shift makes a conv bias redundant.
            layers.append(nn.Conv2d(c_in, out_channels, 3, padding=padding, bias=norm == "none"))
            if (layer := norm_layer(norm, out_channels)) is not None:
                layers.append(layer)
            layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)


class Down(nn.Sequential):
    """One contracting step: 2x2 max-pool, then a DoubleConv that doubles the channels."""

    def __init__(self, in_channels: int, out_channels: int, padding: int, norm: Norm) -> None:
        super().__init__(nn.MaxPool2d(2), DoubleConv(in_channels, out_channels, padding, norm))


class Up(nn.Module):
    """One expanding step: upsample x2 halving the channels, concat the (cropped) skip, DoubleConv."""

    def __init__(self, in_channels: int, out_channels: int, padding: int, norm: Norm, upsample: str) -> None:
        super().__init__()
        if upsample == "transpose":
            self.up: nn.Module = nn.ConvTranspose2d(in_channels, out_channels, 2, stride=2)
        else:
            # A 1x1 conv after the interpolation halves the channels without changing the size rule.
            self.up = nn.Sequential(
                nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
                nn.Conv2d(in_channels, out_channels, 1),
            )
        self.conv = DoubleConv(2 * out_channels, out_channels, padding, norm)

    def forward(self, x: Tensor, skip: Tensor) -> Tensor:
        """`x (N, C_in, h, w)`, `skip (N, C_out, H, W)` with H >= 2h -> `(N, C_out, 2h - 4, 2w - 4)` unpadded."""
        x = self.up(x)
        skip = center_crop(skip, x.shape[-2], x.shape[-1])
        return self.conv(torch.cat([skip, x], dim=1))


class UNet(nn.Module):
    """U-Net with `depth` poolings; level i has `base_channels * 2**i` channels, at most `max_channels`.

    The defaults are the paper's network: 23 convolutional layers, 31,030,658 parameters for one input
    channel and two classes, 572x572 -> 388x388 logits.
    """

    __jit_unused_properties__ = ["margin", "stride"]  # size maths is plain Python; torch.jit.script skips it

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 2,
        depth: int = 4,
        base_channels: int = 64,
        padding: Literal["valid", "same"] = "valid",
        batch_norm: bool = False,
        upsample: Literal["transpose", "bilinear"] = "transpose",
        dropout: float = 0.0,
        max_channels: int | None = None,
        norm: Norm | None = None,
    ) -> None:
        super().__init__()
        if padding not in ("valid", "same"):
            raise UnetkitError(f"U-Net padding {padding!r} is unknown; use 'valid' or 'same'")
        if upsample not in ("transpose", "bilinear"):
            raise UnetkitError(f"U-Net upsample {upsample!r} is unknown; use 'transpose' or 'bilinear'")
        norm = norm or ("batch" if batch_norm else "none")  # batch_norm=True is the shorthand for norm="batch"
        if norm not in ("none", "batch", "group", "instance"):
            raise UnetkitError(f"U-Net norm {norm!r} is unknown; use 'none', 'batch', 'group' or 'instance'")
        if depth < 1 or base_channels < 1:
            raise UnetkitError(f"U-Net needs depth >= 1 and base_channels >= 1, got {depth} and {base_channels}")
        self.depth = depth
        self.padding = padding
        pad = 1 if padding == "same" else 0
        widths = [min(base_channels * 2**i, max_channels or base_channels * 2**i) for i in range(depth + 1)]

        self.stem = DoubleConv(in_channels, widths[0], pad, norm)
        self.downs = nn.ModuleList(Down(widths[i], widths[i + 1], pad, norm) for i in range(depth))
        self.dropout = nn.Dropout2d(dropout)
        self.ups = nn.ModuleList(
            Up(widths[i + 1], widths[i], pad, norm, upsample) for i in reversed(range(depth))
        )
        self.head = nn.Conv2d(widths[0], num_classes, 1)

    def forward(self, x: Tensor) -> Tensor:
        """`(N, in_channels, H, W)` -> logits `(N, num_classes, H', W')`, H' = `output_size(H)`."""
        if not torch.jit.is_scripting():
            self.check_input(x.shape[-2], x.shape[-1])
        x = self.stem(x)
        skips: list[Tensor] = []
        for down in self.downs:
            skips.append(x)
            x = down(x)
        x = self.dropout(x)
        for up in self.ups:
            x = up(x, skips.pop())
        return self.head(x)

    # Size rule, per spatial dimension.

    def _output_or_none(self, size: int) -> int | None:
        """The output size for `size`, or None when the network cannot take it."""
        if self.padding == "same":
            return size if size > 0 and size % 2**self.depth == 0 else None
        for _ in range(self.depth):
            size -= 4  # two unpadded 3x3 convs
            if size <= 0 or size % 2:  # a 2x2 pool of an odd size would drop a row the skip still has
                return None
            size //= 2
        size -= 4  # bottom DoubleConv
        for _ in range(self.depth):
            if size <= 0:
                return None
            size = 2 * size - 4  # up-conv x2, then two unpadded 3x3 convs
        return size if size > 0 else None

    def is_valid_input(self, input_size: int) -> bool:
        """Whether `input_size` passes every level with even pre-pool sizes and a positive output."""
        return self._output_or_none(input_size) is not None

    def nearest_valid_sizes(self, input_size: int) -> tuple[int | None, int]:
        """(largest valid size <= input_size or None if there is none, smallest valid size >= input_size).

        Valid sizes repeat with period 2**depth above the smallest one, so both searches are short.
        """
        step = 2**self.depth
        below = next((s for s in range(input_size, max(input_size - step, 0), -1) if self.is_valid_input(s)), None)
        above = max(input_size, 1)
        while not self.is_valid_input(above):
            above += 1
        return below, above

    def _size_hint(self, input_size: int) -> str:
        below, above = self.nearest_valid_sizes(input_size)
        if below is None:
            return f"use {above} or more (the smallest valid size)"
        return f"nearest valid sizes are {below} and {above}"

    def output_size(self, input_size: int) -> int:
        """Output size for `input_size`: e.g. 572 -> 388 for the paper's net; UnetkitError if invalid."""
        out = self._output_or_none(input_size)
        if out is None:
            raise UnetkitError(
                f"input size {input_size} does not fit this U-Net ({self.padding} padding, depth {self.depth}); "
                + self._size_hint(input_size)
            )
        return out

    def check_input(self, height: int, width: int) -> None:
        """Raise UnetkitError naming the nearest valid sizes if an `(H, W)` image cannot pass the network."""
        for name, size in (("height", height), ("width", width)):
            if not self.is_valid_input(size):
                raise UnetkitError(
                    f"input {height}x{width} does not fit this U-Net ({self.padding} padding, depth {self.depth}):"
                    f" {name} {size} is invalid, {self._size_hint(size)}; crop or pad the image"
                )

    @property
    def margin(self) -> int:
        """Pixels lost per side, (input - output) // 2: 92 for the paper's net, 0 for "same".

        Every layer trims a fixed amount, so the margin is the same for every valid input.
        """
        smallest = self.nearest_valid_sizes(1)[1]
        return (smallest - self.output_size(smallest)) // 2

    @property
    def stride(self) -> int:
        """The pooling grid, 2**depth: valid sizes repeat with this period, and tiles start on it."""
        return 2**self.depth

    def input_size_for(self, output_size: int) -> int:
        """Smallest valid input whose output is at least `output_size` (388 -> 572 for the paper's net)."""
        return self.nearest_valid_sizes(max(output_size, 1) + 2 * self.margin)[1]


def count_conv_layers(model: nn.Module) -> int:
    """Number of Conv2d and ConvTranspose2d layers, the count the paper quotes (23)."""
    return sum(isinstance(m, nn.Conv2d | nn.ConvTranspose2d) for m in model.modules())
