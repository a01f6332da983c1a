"""The one typed config tree, loaded from YAML.

Every run is described by a `Config`: data, model, loss, optimiser, training. Unknown keys are errors
(a typo must not silently fall back to a default), and every error names the key path. String values may
use `${VAR}` or `${VAR:-default}` so a config can take its data root from the environment; `--set a.b=v`
overrides are applied to the YAML tree before validation, so they obey the same rules.
"""

from __future__ import annotations

import difflib
import os
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from unetkit.errors import UnetkitError

IGNORE_INDEX = 255  # internal label of pixels that count in neither loss nor metrics (padding, "void")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class MaskConfig(Strict):
    """How the mask files encode classes; predictions are written back in the same encoding."""

    # binary: two raw values ({0,255} or {0,1}); `foreground_value` is class 1, the other value class 0.
    # index: the raw value is the class index. palette: RGB colour of class i is `palette[i]`.
    # gray_values: raw gray value of class i is `values[i]` (arbitrary, unordered values).
    # instances: label images (0 = background, every other value one object, 8/16-bit PNG or TIFF); with 2
    # classes the target is object vs background, with 3 background / interior / boundary (see boundary_px).
    encoding: Literal["binary", "index", "palette", "gray_values", "instances"] = "index"
    foreground_value: int = 255
    palette: list[tuple[int, int, int]] | None = None
    values: list[int] | None = None
    # Raw value (index / gray_values) or colour (palette) of pixels to ignore, e.g. CamVid's void = 11.
    ignore_value: int | None = None
    ignore_color: tuple[int, int, int] | None = None
    # binary only: masks that are almost binary (JPEG-compressed or anti-aliased, e.g. values 0-8 and 247-255)
    # are read as "raw value > threshold" = the high value (255), else the low value (0); e.g. threshold: 127
    threshold: int | None = Field(None, ge=0)
    boundary_px: int = Field(2, ge=1)  # instances, 3 classes: width of each object's boundary ring

    @model_validator(mode="after")
    def _check(self) -> MaskConfig:
        if self.threshold is not None and self.encoding != "binary":
            raise ValueError("data.mask.threshold is for encoding 'binary' only")
        if self.encoding == "palette" and not self.palette:
            raise ValueError("encoding 'palette' needs `palette`: one [R, G, B] colour per class")
        if self.encoding == "gray_values" and not self.values:
            raise ValueError("encoding 'gray_values' needs `values`: one gray value per class")
        return self


class WeightMapConfig(Strict):
    """The paper's pixel-wise weight map (eq. 2): w = w_c + w0 * exp(-(d1 + d2)^2 / (2 sigma^2))."""

    object_classes: list[int] = Field(default_factory=lambda: [1])  # classes whose connected regions are objects
    w0: float = Field(10.0, ge=0.0)  # weight of the border term (paper: 10)
    sigma: float = Field(5.0, gt=0.0)  # its width in pixels (paper: 5)
    class_balance: bool = True  # w_c balances class frequencies per image; false = 1 everywhere
    cache_dir: str | None = None  # also keep computed maps on disk here (.npy), not only in memory


class DataConfig(Strict):
    root: str = "."  # base folder for the relative paths below
    train_images: str = "train/images"
    train_masks: str = "train/masks"
    val_images: str | None = None  # separate validation folders; when absent a split of train is used
    val_masks: str | None = None
    test_images: str | None = None  # held-out test folders for `evaluate --split test`
    test_masks: str | None = None
    test_mask: MaskConfig | None = None  # encoding of the test masks when it differs from `mask`
    val_files: list[str] | None = None  # file stems held out for validation (a fixed split), e.g. ["25", "26"]
    val_fraction: float = Field(0.2, gt=0.0, lt=1.0)  # share of train files held out when no val folders
    split_seed: int = 0  # makes that split deterministic
    channels: Literal[1, 3] = 1  # 1 = gray, 3 = RGB; images are converted on read
    # larger images are refused (a tiny compressed file can unpack to gigabytes); None = no limit
    max_image_pixels: int | None = Field(1_073_741_824, gt=0)
    classes: list[str] = Field(default_factory=lambda: ["background", "foreground"], min_length=2)
    mask: MaskConfig = Field(default_factory=MaskConfig)
    crop_size: int = Field(256, gt=0)  # training input size (random crops); valid U-Nets need a valid size
    crops_per_image: int = Field(1, gt=0)  # random crops drawn from each training image per epoch
    batch_size: int = Field(4, gt=0)
    num_workers: int = Field(0, ge=0)
    # Training augmentation as albumentations' own serialized transforms (A.to_dict format, list of
    # {"__class_fullname__": ..., params}). None = the built-in default pipeline; [] = no augmentation.
    augment: list[dict[str, Any]] | None = None
    weight_map: WeightMapConfig | None = None  # per-pixel loss weights for the `weighted_ce` loss term
    mean: list[float] = Field(default_factory=lambda: [0.5])  # per channel, on intensities scaled to [0, 1]
    std: list[float] = Field(default_factory=lambda: [0.25])
    # dataset: intensities scaled by their dtype's range only, then (x - mean) / std. image: each image's own
    # 0.5th..99.5th percentile range per channel is first stretched to [0, 1] (mixed acquisitions: exposure,
    # stain or gain that differ from image to image), computed over the whole image, never per tile or crop
    normalize: Literal["dataset", "image"] = "dataset"
    # share of training crops placed on a pixel of a class other than `background_class` (sparse objects
    # would otherwise be missed by most random crops); 0 = every crop uniformly random
    foreground_crops: float = Field(0.0, ge=0.0, le=1.0)
    # train and predict at this fraction of the resolution (objects much larger than a crop); predictions and
    # scores stay at the original size
    scale: float = Field(1.0, gt=0.0, le=1.0)
    background_class: int = Field(0, ge=0)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def path(self, relative: str) -> Path:
        """Resolve a data path against `root` (absolute paths stay as they are)."""
        return Path(self.root) / relative


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
    # tta (infer.tta flips when it raises the score by at least 0.005, for 4x the inference time)
    choose: list[Literal["threshold", "min_object", "tta"]] = Field(default_factory=list)
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


class Config(Strict):
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    loss: LossConfig = Field(default_factory=LossConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    infer: InferConfig = Field(default_factory=InferConfig)

    @model_validator(mode="after")
    def _check(self) -> Config:
        n = self.data.num_classes
        if self.loss.binary and n != 2:
            raise ValueError(f"loss `bce` needs exactly 2 classes, data.classes has {n}")
        binary_only = {"threshold", "min_object"} & set(self.train.choose)
        if binary_only and n != 2 and self.model.task != "instances":
            raise ValueError(f"train.choose: {', '.join(sorted(binary_only))} is for binary models; data.classes "
                             f"has {n}")
        if self.infer.min_object_px and n != 2 and self.model.task != "instances":
            raise ValueError(f"infer.min_object_px is for binary and instance models; data.classes has {n}")
        if self.model.task == "instances" and (n != 3 or self.data.mask.encoding != "instances"):
            raise ValueError("model.task 'instances' trains on instance labels (data.mask.encoding: instances) with "
                             "3 classes, e.g. data.classes: [background, interior, boundary]")
        if self.data.background_class >= n:
            raise ValueError(f"data.background_class {self.data.background_class} is not a class index below {n}")
        if isinstance(self.loss.class_weights, list) and len(self.loss.class_weights) != n:
            raise ValueError(f"loss.class_weights has {len(self.loss.class_weights)} values for {n} classes")
        mask = self.data.mask
        if mask.encoding == "palette" and len(mask.palette or []) != n:
            raise ValueError(f"data.mask.palette has {len(mask.palette or [])} colours for {n} classes")
        if mask.encoding == "gray_values" and len(mask.values or []) != n:
            raise ValueError(f"data.mask.values has {len(mask.values or [])} values for {n} classes")
        if mask.encoding == "binary" and n != 2:
            raise ValueError(f"data.mask.encoding 'binary' needs 2 classes, data.classes has {n}")
        if any(t.name == "weighted_ce" for t in self.loss.terms) and self.data.weight_map is None:
            raise ValueError("loss term `weighted_ce` needs data.weight_map, e.g. {object_classes: [1]}")
        if self.data.weight_map is not None and self.data.scale != 1.0:
            raise ValueError("data.weight_map works at the original resolution only; set data.scale to 1")
        if self.data.weight_map is not None and any(c >= n for c in self.data.weight_map.object_classes):
            raise ValueError(f"data.weight_map.object_classes must be class indices below {n}")
        if self.infer.em_scores and n != 2:
            raise ValueError("infer.em_scores needs 2 classes (class 1 = boundary)")
        for key in ("mean", "std"):
            if len(getattr(self.data, key)) not in (1, self.data.channels):
                raise ValueError(f"data.{key} needs 1 or {self.data.channels} values")
        return self


_VAR = re.compile(r"\$\{(\w+)(?::-([^}]*))?\}")


def _expand(value: Any) -> Any:
    """Expand ${VAR} and ${VAR:-default} in every string of a YAML tree."""
    if isinstance(value, dict):
        return {k: _expand(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand(v) for v in value]
    if isinstance(value, str):

        def sub(m: re.Match[str]) -> str:
            found = os.environ.get(m.group(1))
            if found is None and m.group(2) is None:
                raise UnetkitError(f"environment variable {m.group(1)} is not set (used in the config); set it")
            return found if found is not None else m.group(2)

        return _VAR.sub(sub, value)
    return value


def apply_override(tree: dict[str, Any], assignment: str) -> None:
    """Apply one `a.b.c=value` override in place; the value is parsed as YAML (numbers, lists, null)."""
    if "=" not in assignment:
        raise UnetkitError(f"--set {assignment!r}: expected key=value, e.g. --set train.epochs=5")
    key, raw = assignment.split("=", 1)
    parts = key.strip().split(".")
    node = tree
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise UnetkitError(f"--set {key}: {part!r} is not a section")
        node = child
    node[parts[-1]] = yaml.safe_load(raw) if raw.strip() else ""


def _known_keys(loc: tuple[Any, ...]) -> list[str]:
    """The keys the config section at `loc` (a pydantic error location, ending in the unknown key) accepts."""
    model: Any = Config
    for part in loc[:-1]:
        field = model.model_fields.get(part) if isinstance(part, str) else None
        if field is None:
            return []
        annotation = field.annotation
        candidates = [annotation, *getattr(annotation, "__args__", ())]
        model = next((c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None)
        if model is None:
            return []
    return list(model.model_fields)


def _problem(e: Any) -> str:
    """One pydantic error as `key.path: message`, with a "did you mean" for a misspelt key."""
    loc = tuple(e["loc"])
    message = e["msg"].removeprefix("Value error, ")
    if e["type"] == "extra_forbidden":
        close = difflib.get_close_matches(str(loc[-1]), _known_keys(loc), n=1, cutoff=0.6)
        message = "unknown key" + (f"; did you mean {close[0]}?" if close else "")
    where = ".".join(str(p) for p in loc)
    return f"{where}: {message}" if where else message


def config_from_dict(tree: dict[str, Any], source: str = "config", overrides: dict[str, str] | None = None) -> Config:
    """Validate a plain tree into a `Config`, turning pydantic's report into one line per key path.

    `overrides` maps the dotted keys given with `--set` to their assignments, so a bad value set on the command
    line is blamed on `--set key=value`, not on the config file.
    """
    try:
        return Config.model_validate(_expand(tree))
    except ValidationError as err:
        problems = [_problem(e) for e in err.errors()]
        blamed = [(key, text) for key in (overrides or {}) for text in problems if text.startswith(f"{key}:")
                  or text.startswith(f"{key}.")]
        if blamed and len(blamed) == len(problems):
            raise UnetkitError("; ".join(f"--set {overrides[key]}: {text.split(': ', 1)[1]}"  # type: ignore[index]
                                         for key, text in blamed)) from None
        raise UnetkitError(f"{source}: " + "; ".join(problems)) from None


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Load a YAML config (or the defaults when `path` is None), apply `--set` overrides, validate."""
    tree: dict[str, Any] = {}
    source = "defaults"
    if path is not None:
        path = Path(path)
        source = str(path)
        if not path.is_file():
            raise UnetkitError(f"config file {path} does not exist")
        try:
            loaded = yaml.safe_load(path.read_text())
        except yaml.YAMLError as err:
            mark = getattr(err, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
            problem = getattr(err, "problem", None) or str(err).splitlines()[0]
            raise UnetkitError(f"{path}: not valid YAML{where} ({problem})") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise UnetkitError(f"{path}: the top level must be a mapping of sections (data, model, ...)")
        tree = loaded or {}
    for assignment in overrides or []:
        apply_override(tree, assignment)
    given = {a.split("=", 1)[0].strip(): a for a in overrides or []}
    return config_from_dict(tree, source, given)


def save_config(cfg: Config, path: str | Path) -> None:
    """Write the resolved config (every default filled in) as YAML next to a run."""
    Path(path).write_text(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
