"""The one typed config tree, loaded from YAML.

Every run is described by a `Config`: data, model, loss, optimiser, training. Unknown keys are errors
(a typo must not silently fall back to a default), and every error names the key path. String values may
use `${VAR}` or `${VAR:-default}` so a config can take its data root from the environment; `--set a.b=v`
overrides are applied to the YAML tree before validation, so they obey the same rules.

The sections live in `data_sections.py` and `sections.py`, the tree and its cross-section checks in `tree.py`,
reading and writing YAML in `loading.py`; import every name from here.
"""

from unetkit.config.data_sections import IGNORE_INDEX, DataConfig, MaskConfig, Strict, WeightMapConfig
from unetkit.config.loading import apply_override, config_from_dict, load_config, save_config
from unetkit.config.sections import InferConfig, LossConfig, LossTerm, ModelConfig, OptimConfig, TrainConfig
from unetkit.config.tree import Config

__all__ = [
    "Config",
    "DataConfig",
    "IGNORE_INDEX",
    "InferConfig",
    "LossConfig",
    "LossTerm",
    "MaskConfig",
    "ModelConfig",
    "OptimConfig",
    "Strict",
    "TrainConfig",
    "WeightMapConfig",
    "apply_override",
    "config_from_dict",
    "load_config",
    "save_config",
]
