"""The sections after `data`: model, loss, optim, train and infer, each validated on its own."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from unetkit.config.data_sections import Strict


class ModelConfig(Strict):
    # unet = the paper's network (the fields below up to `init`); encoder_unet = smp's U-Net on a
    # classification encoder (the `encoder*` fields; always padded, input sides multiples of 32).
    name: Literal["unet", "encoder_unet"] = "unet"
    # semantic = one class per pixel; instances = one label per object: trained on instance labels as
    # background / interior / boundary (3 classes), objects grown from the interiors (infer/instances.py)
    task: Literal["semantic", "instances"] = "semantic"
    padding: Literal["valid", "same"] = "same"  # valid = the paper's unpadded network
    depth: int = Field(4, ge=1, le=6)  # number of 2x2 poolings
    base_channels: int = Field(64, gt=0)  # channels of the first level, doubled per level
    max_channels: int | None = Field(None, gt=0)  # cap of that doubling (deep networks stay affordable)
    # after each conv: batch norm (fastest from scratch with >= 4 samples a batch), group / instance norm (per
    # sample, so the same in training and inference, with any batch or mix of acquisitions) or none
    norm: Literal["none", "batch", "group", "instance"] = "none"
    upsample: Literal["transpose", "bilinear"] = "transpose"
    dropout: float = Field(0.0, ge=0.0, lt=1.0)  # at the end of the contracting path, as in the paper
    init: Literal["default", "he"] = "default"  # he = normal with std sqrt(2 / fan_in), as in the paper
    # An smp encoder name (resnet34, vgg16, inceptionresnetv2, efficientnet-b0) or a timm model as
    # tu-<name> (Inception v3 is tu-inception_v3).
    encoder: str = "resnet34"
    # none = random init; imagenet (or another kind smp lists, e.g. ssl) = download via smp; or the path of
    # a .pth / .pt / .safetensors state dict of the encoder or of a torchvision / timm model with its keys.
    encoder_weights: str = "none"
    freeze_encoder_epochs: int = Field(0, ge=0)  # train only the decoder for this many first epochs

    @model_validator(mode="before")
    @classmethod
    def _older_keys(cls, values: Any) -> Any:
        """`batch_norm: bool` is the earlier spelling (and a shorthand) of `norm`: true means batch, false means
        none unless another norm is named beside it."""
        if not isinstance(values, dict) or "batch_norm" not in values:
            return values
        values = dict(values)
        if values.pop("batch_norm") is True:
            values["norm"] = "batch"
        elif values.get("norm", "none") == "batch":
            values["norm"] = "none"
        return values

    @property
    def batch_norm(self) -> bool:
        return self.norm == "batch"

    @model_validator(mode="after")
    def _check(self) -> ModelConfig:
        if self.name == "encoder_unet" and self.padding == "valid":
            raise ValueError("padding 'valid' is only for name 'unet'; encoder_unet is always padded: "
                             "set model.padding=same")
        return self


class LossTerm(Strict):
    name: Literal["bce", "ce", "dice", "focal", "weighted_ce"]  # weighted_ce uses data.weight_map
    weight: float = 1.0


class LossConfig(Strict):
    # Weighted sum of terms, e.g. [{name: dice}, {name: focal}]. `bce` makes a binary model with one
    # output channel; every other term works on C-class softmax outputs.
    terms: list[LossTerm] = Field(default_factory=lambda: [LossTerm(name="ce")], min_length=1)
    # per class, for ce / focal / dice; or computed from the training masks: "median" (median frequency,
    # as SegNet) or "inverse" (inverse frequency); the computed values are written into the run's config.yaml
    class_weights: list[float] | Literal["median", "inverse"] | None = None
    focal_gamma: float = Field(2.0, ge=0.0)
    dice_smooth: float = Field(1.0, ge=0.0)

    @model_validator(mode="after")
    def _check(self) -> LossConfig:
        names = [t.name for t in self.terms]
        if "bce" in names and len(set(names)) > 1 and not set(names) <= {"bce", "dice"}:
            raise ValueError("`bce` combines only with `dice` (both on a single foreground channel)")
        return self

    @property
    def binary(self) -> bool:
        return any(t.name == "bce" for t in self.terms)


class OptimConfig(Strict):
    name: Literal["adam", "adamw", "sgd"] = "adam"
    lr: float = Field(1e-3, gt=0.0)
    weight_decay: float = Field(0.0, ge=0.0)
    momentum: float = Field(0.9, ge=0.0, lt=1.0)  # sgd only; the paper used 0.99
    schedule: Literal["none", "cosine", "plateau"] = "cosine"
    plateau_patience: int = Field(3, ge=0)
    plateau_factor: float = Field(0.5, gt=0.0, lt=1.0)
    min_lr: float = Field(0.0, ge=0.0)


class TrainConfig(Strict):
    epochs: int = Field(20, gt=0)
    max_minutes: float | None = Field(None, gt=0)  # time budget: the cosine follows the clock, the run ends on time
    device: str = "auto"  # auto = cuda when available, else cpu
    # autocast of the forward pass; weights and optimiser stay fp32. auto = fp16 on CUDA (with gradient scaling),
    # fp32 elsewhere; bf16 = CPUs with AVX-512 bf16 / AMX and recent GPUs (~2x conv speed on such CPUs)
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    channels_last: bool = False  # NHWC activations: faster convolutions with oneDNN / cuDNN
    compile: bool = False  # torch.compile the network: slow first steps (compiling), faster after
    seed: int = 0
    output_dir: str = "runs"
    run_name: str | None = None  # default: config file name + timestamp
    sample_images: int = Field(2, ge=0)  # validation images drawn in samples/epoch_NNN.png
    # after training, choose on the validation split with best.pt and store in best.pt and config.yaml:
    # threshold (binary: infer.threshold by foreground IoU), min_object (binary: infer.min_object_px),
    # tta (infer.tta flips when it raises the score by at least 0.005, for 4x the inference time),
    # gaps (a boundary map: infer.boundary_seeds, chosen before the threshold)
    choose: list[Literal["threshold", "min_object", "tta", "gaps"]] = Field(default_factory=list)
    # what those choices maximise: pixels = foreground IoU (mIoU for several classes); regions = for a binary
    # boundary map (class 1 = boundary, e.g. membranes), the Rand error of the regions it encloses (evaluate --em)
    choose_by: Literal["pixels", "regions"] = "pixels"
    monitor: Literal["miou", "val_loss"] = "miou"  # decides best.pt
    checkpoint_every: int | None = Field(None, gt=0)  # also write last.pt every N steps (resume mid-epoch)
    deterministic: bool = False  # deterministic kernels; with the saved RNG states a resumed run is bitwise identical
    on_nonfinite: Literal["stop", "skip"] = "stop"  # a NaN/inf loss or gradient stops the run, or skips that step
    sync_batchnorm: bool = False  # under torchrun: batch-norm statistics over the global batch, not per process
    dist_timeout_minutes: float = Field(10.0, gt=0)  # under torchrun: a rank silent this long ends the run
    # where each epoch's metrics go: csv = metrics.csv; tensorboard = RUN/tensorboard/ event files; mlflow = a run
    # in MLFLOW_TRACKING_URI or the local store RUN/mlruns/ (both need pip install 'unetkit[tracking]')
    loggers: list[Literal["csv", "tensorboard", "mlflow"]] = Field(default_factory=lambda: ["csv"])

    @model_validator(mode="before")
    @classmethod
    def _older_keys(cls, values: Any) -> Any:
        """Configs and checkpoints of earlier versions spelt the precision `amp: bool` + `bf16: bool`, and the
        threshold choice `choose_threshold: bool`."""
        if not isinstance(values, dict) or not {"amp", "bf16", "choose_threshold"} & values.keys():
            return values
        values = dict(values)
        if values.pop("choose_threshold", False) and "choose" not in values:
            values["choose"] = ["threshold"]
        if not {"amp", "bf16"} & values.keys():
            return values
        amp, bf16 = values.pop("amp", True), values.pop("bf16", False)
        if "precision" not in values:
            values["precision"] = "bf16" if bf16 else ("auto" if amp else "fp32")
        return values

    @field_validator("loggers")
    @classmethod
    def _loggers_once(cls, loggers: list[str]) -> list[str]:
        return list(dict.fromkeys(loggers))  # a logger named twice logs once


class InferConfig(Strict):
    """How evaluate and predict run the network over whole images (the CLI flags override these)."""

    tile: int = Field(512, gt=0)  # output tile size; larger images are predicted tile by tile
    overlap: int | None = Field(None, ge=0)  # pixels shared by neighbouring tiles; None = 0 for valid, tile/4 same
    blend: Literal["gaussian", "linear", "constant"] = "gaussian"  # weights of overlapping tiles
    tta: Literal["none", "flips", "d4"] = "none"  # test-time augmentation: flips, or flips and 90-degree turns
    batch_size: int = Field(4, gt=0)  # tiles per forward pass, at most (big tiles go in fewer, ~2 Mpx per pass)
    em_scores: bool = False  # also report ISBI 2012 EM scores (binary: class 1 = boundary)
    seed_threshold: float = Field(0.5, gt=0.0, lt=1.0)  # instance models: p(interior) that seeds an object
    # one label per object: predict writes NAME_instances.png + NAME_objects.csv, evaluate adds object scores
    instances: bool = False
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"  # bf16: CPUs with AVX-512 bf16 / AMX, GPUs; fp16: GPUs
    channels_last: bool = True  # NHWC activations: same results, faster convolutions (1.7x on an AVX-512 CPU)
    compile: bool = False  # torch.compile the network (static tile shapes; the first tiles wait for compilation)
    # binary models: a pixel is foreground when p(foreground) > threshold; 0.5 = the arg-max. Lower it when
    # thin or faint objects are missed, raise it when the background bleeds in.
    threshold: float = Field(0.5, gt=0.0, lt=1.0)
    # binary models: foreground regions (8-connected) smaller than this many pixels become background, over
    # the whole image (images up to 64 Mpx; larger ones are predicted band by band and left as they are)
    min_object_px: int = Field(0, ge=0)
    # boundary maps (binary, class 1 = the boundaries between objects): regions seeded where p(boundary) is
    # below this are grown by watershed and the lines where they meet become boundary, closing the gaps that
    # merge neighbours (whole images up to 64 Mpx); None = off
    boundary_seeds: float | None = Field(None, gt=0.0, lt=1.0)
    # best and worst images each shown (image | truth | prediction | errors) in report.html and
    # evaluation_NAME.html; 0 = none. Every image's own score is kept either way
    report_images: int = Field(3, ge=0)

    @field_validator("overlap")
    @classmethod
    def _overlap_below_tile(cls, overlap: int | None, info: ValidationInfo) -> int | None:
        tile = info.data.get("tile")  # absent when the tile itself was invalid
        if overlap is not None and tile is not None and overlap >= tile:
            raise ValueError(f"overlap {overlap} must be smaller than the tile {tile}")
        return overlap

    def overlap_for(self, margin: int) -> int:
        if self.overlap is not None:
            return self.overlap
        return 0 if margin > 0 else self.tile // 4
