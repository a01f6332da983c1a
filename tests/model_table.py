"""The model families every family-wide test runs: add a row here and the training, validation-equals-evaluate,
batch-norm folding, export and ensemble tests cover it.

Each row is a list of `--set` overrides on top of the synthetic 64x64 config (`synthetic_config` in conftest),
chosen at the family's smallest practical size so a row trains for an epoch in seconds on a CPU. `CORE` are the
rows that also train end to end in the slower tests (one of each kind: the paper's network, the padded network
with batch norm and dropout, an encoder); `MODEL_TABLE` adds the other encoders.
"""

from __future__ import annotations

import torch
from torch import nn

CORE: dict[str, list[str]] = {
    # the paper's unpadded network, with its dropout at the end of the contracting path
    "unet-valid-dropout": ["model.padding=valid", "model.dropout=0.5"],
    # the padded network with batch norm and dropout: the case in which a wrong-mode validation misreports
    "unet-same-bn-dropout": ["model.padding=same", "model.batch_norm=true", "model.dropout=0.5"],
    # an smp encoder (batch norm throughout) at its smallest input, 64
    "encoder-resnet18": ["model.name=encoder_unet", "model.encoder=resnet18"],
}

MODEL_TABLE: dict[str, list[str]] = {
    **CORE,
    "encoder-vgg16": ["model.name=encoder_unet", "model.encoder=vgg16"],
    # timm's Inception v3 has unpadded stems: 128 is its smallest input with a 2x2 deepest map
    "encoder-inception_v3": ["model.name=encoder_unet", "model.encoder=tu-inception_v3", "data.crop_size=128"],
}


def encoder_rows() -> list[tuple[str, int]]:
    """(encoder name, smallest input side) of every encoder row: its `data.crop_size`, else the table's 64."""
    rows = []
    for overrides in MODEL_TABLE.values():
        values = dict(item.split("=", 1) for item in overrides)
        if values.get("model.name") == "encoder_unet":
            rows.append((values["model.encoder"], int(values.get("data.crop_size", 64))))
    return rows


def table_inputs(count: int, channels: int, height: int, width: int, generator: torch.Generator) -> torch.Tensor:
    """(count, channels, height, width) inputs of one fixed distribution (mean 0.5, std 2): the statistics of
    `with_statistics` are measured on it, and tests feed the same, so every norm sees what it was calibrated on."""
    return torch.randn(count, channels, height, width, generator=generator) * 2 + 0.5


def with_statistics(model: nn.Module, channels: int, size: int, seed: int = 0) -> nn.Module:
    """`model` in eval mode with batch-norm affine parameters and running statistics far from their defaults.

    A freshly built network has mean 0, variance 1, weight 1 and bias 0 in every norm, with which folding (or an
    exporter that drops a norm) changes nothing visible. Here each norm gets random affine parameters, then its
    running statistics become the exact averages over a few passes of shifted inputs (cumulative averaging,
    `momentum=None`), so every layer normalizes what it really sees and activations stay of order one, as in a
    trained network. Dropout is off in eval mode.
    """
    generator = torch.Generator().manual_seed(seed)
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d) and m.track_running_stats]
    with torch.no_grad():
        for norm in norms:
            if norm.affine:
                norm.weight.copy_(torch.rand(norm.weight.shape, generator=generator) * 1.5 + 0.5)
                norm.bias.copy_(torch.rand(norm.bias.shape, generator=generator) - 0.5)
            norm.reset_running_stats()
            norm.momentum = None
        model.train()
        for _ in range(3):  # batches of 8: a deepest map of 2x2 gives a norm 32 values per batch, not 8
            model(table_inputs(8, channels, size, size, generator))
    for norm in norms:
        norm.momentum = 0.1
    return model.eval()
