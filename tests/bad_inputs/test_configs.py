"""Broken training configs: each gives one error line naming the key (or the file), and no run folder."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from bad_inputs.builders import Scene


def _config(s: Scene, **sections: dict[str, Any]) -> list[str]:
    return ["train", str(s.write_config(s.data, "bad.yaml", **sections)), "-q"]


def unknown_key(s: Scene) -> list[str]:
    return _config(s, model={"dept": 3})


def wrong_type(s: Scene) -> list[str]:
    return _config(s, train={"epochs": "many"})


def negative_tile(s: Scene) -> list[str]:
    return _config(s, infer={"tile": -64})


def overlap_not_below_tile(s: Scene) -> list[str]:
    return _config(s, infer={"tile": 64, "overlap": 64})


def crop_below_valid_minimum(s: Scene) -> list[str]:
    # valid U-Net of depth 2: the smallest input is 44 (output 4); 8 pixels cannot pass through it
    return _config(s, model={"padding": "valid"}, data={"crop_size": 8})


def negative_crop(s: Scene) -> list[str]:
    return _config(s, data={"crop_size": -32})


def bad_yaml_syntax(s: Scene) -> list[str]:
    path = s.tmp / "broken.yaml"
    path.write_text("data:\n  root: [unclosed\nmodel: {depth: 2\n")
    return ["train", str(path), "-q"]


def top_level_list(s: Scene) -> list[str]:
    path = s.tmp / "listed.yaml"
    path.write_text("- data\n- model\n")
    return ["train", str(path), "-q"]


def unset_environment_variable(s: Scene) -> list[str]:
    s.monkeypatch.delenv("UNETKIT_NO_SUCH_ROOT", raising=False)
    return _config(s, data={"root": "${UNETKIT_NO_SUCH_ROOT}/cells"})


def class_weights_count(s: Scene) -> list[str]:
    return _config(s, loss={"class_weights": [1.0, 2.0, 3.0]})


def palette_without_colours(s: Scene) -> list[str]:
    return _config(s, data={"mask": {"encoding": "palette"}})


def unknown_choice(s: Scene) -> list[str]:
    return _config(s, optim={"name": "adamax"})


def set_into_a_value(s: Scene) -> list[str]:
    return [*s.train, "--set", "data.crop_size.x=3"]


def missing_config_file(s: Scene) -> list[str]:
    return ["train", str(s.tmp / "nowhere.yaml"), "-q"]


def missing_data_folder(s: Scene) -> list[str]:
    return _config(s, data={"train_images": "no_such_folder"})


CASES = [
    pytest.param(unknown_key, [r"bad\.yaml", r"model\.dept", "unknown key"], id="unknown-key"),
    pytest.param(wrong_type, [r"train\.epochs", "integer"], id="wrong-type"),
    pytest.param(negative_tile, [r"infer\.tile", "greater than 0"], id="negative-tile"),
    pytest.param(overlap_not_below_tile, [r"infer\.overlap", "overlap 64 must be smaller than the tile 64"],
                 id="overlap-equals-tile"),
    pytest.param(crop_below_valid_minimum, [r"data\.crop_size 8", r"44 or more"], id="crop-below-valid-minimum"),
    pytest.param(negative_crop, [r"data\.crop_size", "greater than 0"], id="negative-crop-size"),
    pytest.param(bad_yaml_syntax, [r"broken\.yaml", "not valid YAML"], id="bad-yaml-syntax"),
    pytest.param(top_level_list, [r"listed\.yaml", "mapping"], id="yaml-top-level-list"),
    pytest.param(unset_environment_variable, ["UNETKIT_NO_SUCH_ROOT", "not set"], id="unset-environment-variable"),
    pytest.param(class_weights_count, [r"loss\.class_weights", "3 values for 2 classes"], id="class-weights-count"),
    pytest.param(palette_without_colours, [r"data\.mask", "palette"], id="palette-without-colours"),
    pytest.param(unknown_choice, [r"optim\.name", "adam"], id="unknown-optimizer"),
    pytest.param(set_into_a_value, [r"data\.crop_size\.x", "not a section"], id="set-into-a-value"),
    pytest.param(missing_config_file, [r"nowhere\.yaml", "does not exist"], id="missing-config-file"),
    pytest.param(missing_data_folder, [r"no_such_folder", "does not exist"], id="missing-data-folder"),
]


@pytest.mark.parametrize("setup, patterns", CASES)
def test_bad_config(setup: Callable[[Scene], list[str]], patterns: list[str],
                    check_clean_error: Callable[..., str]) -> None:
    check_clean_error(setup, patterns)
