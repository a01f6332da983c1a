"""The size rule of a network, held once by every link of the inference chain.

A U-Net takes only some input sizes and may crop its output (the paper's network: 572 -> 388, 92 pixels per
side). Tiling, mirror padding, TTA, ensembles and exported models all need the same five facts, so each link
holds one `Geometry` (its network's, or one derived from it) and reads them from there:

    margin           pixels lost per side, (input - output) / 2: 92 for the paper's network, 0 when padded
    stride           the pooling grid, 2**depth: tiles start on it so every tile sees the same grid
    output_size(n)   output side for input side n (an error naming the nearest valid sizes if n is invalid)
    input_size_for(n) smallest valid input side whose output covers n pixels
    is_valid_input(n) whether side n passes the network

The networks themselves (`UNet`, `EncoderUNet`) are geometries; `FixedInput` narrows one to a single input
side (an ONNX file exported for one tile) and `SharedGeometry` is what the members of an ensemble all accept.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Protocol

from unetkit.errors import UnetkitError


class Geometry(Protocol):
    """What tiling needs to know about a network: which sizes it takes and how much it crops."""

    margin: int
    stride: int

    def output_size(self, input_size: int) -> int: ...
    def input_size_for(self, output_size: int) -> int: ...
    def is_valid_input(self, input_size: int) -> bool: ...


class HoldsGeometry:
    """Base of the inference links: each holds `self.geometry` and answers the size questions from it, so a
    wrapper of a wrapper of a network still reports the network's rule (never a copied attribute)."""

    geometry: Geometry

    @property
    def margin(self) -> int:
        return self.geometry.margin

    @property
    def stride(self) -> int:
        return self.geometry.stride

    def output_size(self, input_size: int) -> int:
        return self.geometry.output_size(input_size)

    def input_size_for(self, output_size: int) -> int:
        return self.geometry.input_size_for(output_size)

    def is_valid_input(self, input_size: int) -> bool:
        return self.geometry.is_valid_input(input_size)


def geometry_of(fn: object) -> Geometry:
    """The geometry an inference callable holds, or `fn` itself when it is a network or a bare geometry."""
    return getattr(fn, "geometry", fn)  # type: ignore[return-value]


class FixedInput:
    """`net`'s rule narrowed to one input side, for a model exported with a fixed tile (`export --tile`)."""

    def __init__(self, net: Geometry, input_size: int, source: str) -> None:
        self.net, self.input_size, self.source = net, input_size, source
        self.margin, self.stride = net.margin, net.stride

    def is_valid_input(self, input_size: int) -> bool:
        return input_size == self.input_size and self.net.is_valid_input(input_size)

    def output_size(self, input_size: int) -> int:
        if input_size != self.input_size:
            raise UnetkitError(f"{self.source} takes {self.input_size}x{self.input_size} inputs only, not "
                               f"{input_size}; export the checkpoint without a fixed tile for other sizes")
        return self.net.output_size(input_size)

    def input_size_for(self, output_size: int) -> int:
        """The fixed side when its output covers `output_size`, else an error saying which tile fits."""
        if self.net.input_size_for(output_size) > self.input_size:
            covered = self.net.output_size(self.input_size)
            raise UnetkitError(f"{self.source} was exported for {self.input_size}x{self.input_size} inputs "
                               f"({covered} output pixels); predict with --tile {covered} or less")
        return self.input_size


class SharedGeometry:
    """The sizes every member of an ensemble accepts. Padded members (margin 0) may pool to different depths:
    the shared stride is the lcm of theirs. Unpadded members must crop alike (same margin and stride), or
    their outputs would cover different pixels."""

    def __init__(self, members: Sequence[Geometry], sources: Sequence[str]) -> None:
        self.members = list(members)
        if all(m.margin == 0 for m in members):
            self.margin, self.stride = 0, math.lcm(*(m.stride for m in members))
            return
        first = members[0]
        for member, source in zip(members[1:], sources[1:], strict=True):
            if (member.margin, member.stride) != (first.margin, first.stride):
                raise UnetkitError(
                    f"{source}: its network crops {member.margin} px per side (pooling stride {member.stride}) but "
                    f"{sources[0]} crops {first.margin} px (stride {first.stride}), so their outputs cover "
                    "different pixels; ensemble only padded ('same') U-Nets, or unpadded ('valid') U-Nets of one "
                    "depth")
        self.margin, self.stride = first.margin, first.stride

    def is_valid_input(self, input_size: int) -> bool:
        return all(m.is_valid_input(input_size) for m in self.members)

    def output_size(self, input_size: int) -> int:
        if self.margin:
            return self.members[0].output_size(input_size)
        if not self.is_valid_input(input_size):
            raise UnetkitError(f"input size {input_size} does not fit every ensemble member; "
                               f"use a multiple of {self.stride}")
        return input_size

    def input_size_for(self, output_size: int) -> int:
        """Smallest input valid for every member whose output covers `output_size`."""
        if self.margin:
            return self.members[0].input_size_for(output_size)
        start = max(m.input_size_for(output_size) for m in self.members)
        for size in range(start, start + self.stride + 1):  # a common multiple of the strides lies within
            if self.is_valid_input(size):
                return size
        raise ValueError(f"no input size from {start} on fits every ensemble member")


def padding_for(geometry: Geometry, size: int) -> tuple[int, int]:
    """(pad_before, pad_after) along one axis so the network's output covers `size` pixels from its start.

    Output pixels beyond the image all go to the end, so the pass sits on the same pooling grid as the
    tiles of `predict_tiled` (which start at 0) and both give identical results.
    """
    padded = geometry.input_size_for(size)
    return geometry.margin, padded - size - geometry.margin
