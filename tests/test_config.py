import re
from pathlib import Path

import pytest
import torch
import yaml

from unetkit.config import Config, LossTerm, config_from_dict, load_config, save_config
from unetkit.errors import UnetkitError

REPO = Path(__file__).resolve().parents[1]
PACKAGED = sorted((REPO / "configs").glob("*.yaml"))


def write_yaml(path: Path, tree: object) -> Path:
    path.write_text(yaml.safe_dump(tree, sort_keys=False))
    return path


def test_defaults_without_a_file() -> None:
    cfg = load_config()
    assert cfg == Config()
    assert cfg.model.depth == 4 and cfg.model.base_channels == 64 and cfg.model.padding == "same"
    assert cfg.data.classes == ["background", "foreground"] and cfg.data.num_classes == 2
    assert cfg.data.crop_size == 256 and cfg.data.mask.encoding == "index"
    assert cfg.loss.terms == [LossTerm(name="ce", weight=1.0)] and not cfg.loss.binary
    assert cfg.train.epochs == 20 and cfg.train.monitor == "miou"


def test_yaml_file_sets_values_and_leaves_the_rest_default(tmp_path: Path) -> None:
    path = write_yaml(tmp_path / "c.yaml", {
        "data": {"classes": ["bg", "cell", "edge"], "mask": {"encoding": "gray_values", "values": [0, 128, 255]}},
        "model": {"depth": 3, "padding": "valid"},
        "loss": {"terms": [{"name": "ce"}, {"name": "dice", "weight": 0.5}]},
    })
    cfg = load_config(path)
    assert cfg.data.num_classes == 3 and cfg.data.mask.values == [0, 128, 255]
    assert cfg.model.depth == 3 and cfg.model.padding == "valid"
    assert [(t.name, t.weight) for t in cfg.loss.terms] == [("ce", 1.0), ("dice", 0.5)]
    assert cfg.model.base_channels == 64 and cfg.train.epochs == 20  # untouched defaults


def test_empty_yaml_file_gives_the_defaults(tmp_path: Path) -> None:
    path = tmp_path / "empty.yaml"
    path.write_text("# nothing set\n")
    assert load_config(path) == Config()


def test_overrides_parse_values_as_yaml_and_beat_the_file(tmp_path: Path) -> None:
    path = write_yaml(tmp_path / "c.yaml", {"model": {"depth": 3}, "train": {"run_name": "x"}})
    cfg = load_config(path, [
        "model.depth=2",  # int, replaces the file's 3
        "model.batch_norm=true",  # bool
        "optim.lr=0.0005",  # float
        "train.run_name=null",  # None
        "train.device=cpu",  # plain string
        "data.classes=[sky, road, car]",  # list
        "data.mask.encoding=palette",  # three levels deep
        "data.mask.palette=[[0, 0, 0], [0, 0, 255], [255, 0, 0]]",
    ])
    assert cfg.model.depth == 2 and cfg.model.batch_norm is True
    assert cfg.optim.lr == 0.0005 and cfg.train.run_name is None and cfg.train.device == "cpu"
    assert cfg.data.classes == ["sky", "road", "car"]
    assert cfg.data.mask.palette == [(0, 0, 0), (0, 0, 255), (255, 0, 0)]


def test_override_creates_missing_sections() -> None:
    cfg = load_config(None, ["train.epochs=3", "data.mask.foreground_value=1"])
    assert cfg.train.epochs == 3 and cfg.data.mask.foreground_value == 1


@pytest.mark.parametrize(
    "override, key",
    [
        pytest.param("model.dept=3", "model.dept", id="unknown-key"),
        pytest.param("data.mask.colour=1", "data.mask.colour", id="unknown-nested-key"),
        pytest.param("modle.depth=3", "modle", id="unknown-section"),
        pytest.param("train.epochs=many", "train.epochs", id="not-an-int"),
        pytest.param("train.epochs=0", "train.epochs", id="epochs-zero"),
        pytest.param("model.padding=full", "model.padding", id="not-a-choice"),
        pytest.param("data.classes=[only]", "data.classes", id="one-class"),
        pytest.param("optim.lr=-1", "optim.lr", id="negative-lr"),
        pytest.param("model.depth.x=1", "model.depth", id="value-used-as-section"),
        pytest.param("train.epochs", "train.epochs", id="no-equals-sign"),
    ],
)
def test_bad_override_names_the_key_path(override: str, key: str) -> None:
    with pytest.raises(UnetkitError, match=re.escape(key)):
        load_config(None, [override])


def test_unknown_key_in_a_file_names_file_and_key_path(tmp_path: Path) -> None:
    path = write_yaml(tmp_path / "typo.yaml", {"model": {"dept": 3}, "train": {"epochs": "many"}})
    with pytest.raises(UnetkitError) as info:
        load_config(path)
    message = str(info.value)
    assert "typo.yaml" in message and "model.dept: unknown key" in message
    assert "train.epochs" in message  # every problem is reported at once, not only the first
    assert "\n" not in message


@pytest.mark.parametrize(
    "text, fragment",
    [
        pytest.param(None, "does not exist", id="missing-file"),
        pytest.param("model: [depth: 3\n", "not valid YAML", id="broken-yaml"),
        pytest.param("- data\n- model\n", "top level must be a mapping", id="top-level-list"),
    ],
)
def test_unreadable_config_files(tmp_path: Path, text: str | None, fragment: str) -> None:
    path = tmp_path / "c.yaml"
    if text is not None:
        path.write_text(text)
    with pytest.raises(UnetkitError, match=fragment) as info:
        load_config(path)
    assert str(path) in str(info.value)


def test_environment_variables_expand_with_and_without_default(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_yaml(tmp_path / "env.yaml", {
        "data": {"root": "${UNETKIT_T_ROOT}/sub", "train_images": "${UNETKIT_T_IMAGES:-train/img}"},
        "train": {"epochs": "${UNETKIT_T_EPOCHS:-3}", "output_dir": "${UNETKIT_T_OUT:-}runs"},
    })
    monkeypatch.setenv("UNETKIT_T_ROOT", "/data/cells")
    monkeypatch.delenv("UNETKIT_T_IMAGES", raising=False)
    monkeypatch.delenv("UNETKIT_T_EPOCHS", raising=False)
    monkeypatch.delenv("UNETKIT_T_OUT", raising=False)
    cfg = load_config(path)
    assert cfg.data.root == "/data/cells/sub"
    assert cfg.data.train_images == "train/img"
    assert cfg.train.epochs == 3  # the default text "3" validates as the int field it fills
    assert cfg.train.output_dir == "runs"  # an empty default is still a default

    monkeypatch.setenv("UNETKIT_T_IMAGES", "elsewhere")
    monkeypatch.setenv("UNETKIT_T_EPOCHS", "7")
    cfg = load_config(path)
    assert cfg.data.train_images == "elsewhere" and cfg.train.epochs == 7


def test_missing_environment_variable_without_default_is_named(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("UNETKIT_T_NOWHERE", raising=False)
    path = write_yaml(tmp_path / "env.yaml", {"data": {"root": "${UNETKIT_T_NOWHERE}"}})
    with pytest.raises(UnetkitError, match="UNETKIT_T_NOWHERE"):
        load_config(path)


@pytest.mark.parametrize(
    "overrides, fragment",
    [
        pytest.param(["data.mask.encoding=palette", "data.mask.palette=[[0, 0, 0]]"],
                     "data.mask.palette has 1 colours for 2 classes", id="palette-too-short"),
        pytest.param(["data.mask.encoding=gray_values", "data.mask.values=[0, 100, 200]"],
                     "data.mask.values has 3 values for 2 classes", id="gray-values-too-long"),
        pytest.param(["data.classes=[a, b, c]", "loss.terms=[{name: bce}]"],
                     "`bce` needs exactly 2 classes, data.classes has 3", id="bce-with-3-classes"),
        pytest.param(["data.classes=[a, b, c]", "data.mask.encoding=binary"],
                     "'binary' needs 2 classes", id="binary-with-3-classes"),
        pytest.param(["loss.class_weights=[1.0, 2.0, 3.0]"], "class_weights has 3 values for 2 classes",
                     id="class-weights-length"),
        pytest.param(["loss.terms=[{name: bce}, {name: focal}]"], "`bce` combines only with `dice`",
                     id="bce-with-focal"),
        pytest.param(["data.channels=3", "data.mean=[0.1, 0.2]"], "data.mean needs 1 or 3 values",
                     id="mean-length"),
    ],
)
def test_inconsistent_sections_are_refused(overrides: list[str], fragment: str) -> None:
    with pytest.raises(UnetkitError, match=re.escape(fragment)):
        load_config(None, overrides)


def test_save_then_load_round_trips(tmp_path: Path) -> None:
    cfg = load_config(None, [
        "data.classes=[bg, cell, fibre]", "data.mask.encoding=palette",
        "data.mask.palette=[[0, 0, 0], [230, 60, 60], [60, 160, 230]]", "data.mask.ignore_color=[255, 255, 255]",
        "data.augment=[{__class_fullname__: HorizontalFlip, p: 0.5}]", "data.val_images=val/i",
        "data.val_masks=val/m", "model.padding=valid", "model.depth=3", "loss.terms=[{name: ce}, {name: dice}]",
        "loss.class_weights=[1, 2, 3]", "optim.schedule=plateau", "train.run_name=r1",
    ])
    path = tmp_path / "saved.yaml"
    save_config(cfg, path)
    again = load_config(path)
    assert again == cfg
    assert again.data.mask.ignore_color == (255, 255, 255) and again.loss.class_weights == [1.0, 2.0, 3.0]
    assert yaml.safe_load(path.read_text())["model"]["depth"] == 3  # plain YAML, readable by anything


def test_packaged_configs_exist() -> None:
    assert "demo.yaml" in [p.name for p in PACKAGED]


@pytest.mark.parametrize("path", PACKAGED, ids=[p.stem for p in PACKAGED])
def test_packaged_config_loads(path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Variables without a default must come from the environment; point them at a scratch folder.
    for name, default in re.findall(r"\$\{(\w+)(:-[^}]*)?\}", path.read_text()):
        if not default:
            monkeypatch.setenv(name, str(tmp_path))
    cfg = load_config(path)
    assert cfg.data.num_classes >= 2
    save_config(cfg, tmp_path / "resolved.yaml")
    assert load_config(tmp_path / "resolved.yaml") == cfg


def test_one_precision_setting_reads_the_older_amp_and_bf16_keys() -> None:
    # configs and checkpoints written before `train.precision` existed still load, meaning what they meant
    older = {(True, False): "auto", (False, False): "fp32", (True, True): "bf16", (False, True): "bf16"}
    for (amp, bf16), precision in older.items():
        assert config_from_dict({"train": {"amp": amp, "bf16": bf16}}).train.precision == precision
    assert config_from_dict({"train": {"bf16": True}}).train.precision == "bf16"
    assert config_from_dict({}).train.precision == "auto"
    with pytest.raises(UnetkitError, match="train.precision"):
        config_from_dict({"train": {"precision": "fp8"}})


def test_fp16_training_needs_a_gpu() -> None:
    from unetkit.train.setup import training_autocast

    cpu = torch.device("cpu")
    assert training_autocast("auto", cpu) is None and training_autocast("bf16", cpu) is torch.bfloat16
    assert training_autocast("auto", torch.device("cuda")) is torch.float16
    with pytest.raises(UnetkitError, match="train.precision fp16 needs a CUDA GPU"):
        training_autocast("fp16", cpu)
