"""The whole tree, `Config`, and the checks that need more than one section (class counts against the loss,
the mask encoding, the weight map and the choices made after training)."""

from __future__ import annotations

from pydantic import Field, model_validator

from unetkit.config.data_sections import DataConfig, Strict
from unetkit.config.sections import InferConfig, LossConfig, ModelConfig, OptimConfig, TrainConfig


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
        binary_only = {"threshold", "min_object", "gaps"} & set(self.train.choose)
        if binary_only and n != 2 and self.model.task != "instances":
            raise ValueError(f"train.choose: {', '.join(sorted(binary_only))} is for binary models; data.classes "
                             f"has {n}")
        if self.infer.min_object_px and n != 2 and self.model.task != "instances":
            raise ValueError(f"infer.min_object_px is for binary and instance models; data.classes has {n}")
        if self.infer.boundary_seeds is not None and (n != 2 or self.model.task == "instances"):
            raise ValueError(f"infer.boundary_seeds is for binary boundary maps; data.classes has {n}")
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
