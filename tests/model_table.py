"""The model families every family-wide test runs: add a row here and the training, validation-equals-evaluate,
batch-norm folding, export and ensemble tests cover it.

Each row is a list of `--set` overrides on top of the synthetic 64x64 config (`synthetic_config` in conftest),
chosen at the family's smallest practical size so a row trains for an epoch in seconds on a CPU. `CORE` are the
rows that also train end to end in the slower tests (one of each kind: the paper's network, the padded network
with batch norm and dropout, an encoder); `MODEL_TABLE` adds the other encoders.
"""

from __future__ import annotations

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
