"""Files given where a checkpoint goes: foreign, damaged, malicious, ONNX and ensemble files.

A malicious pickle would create `Scene.marker` if any of it ran; every case checks it does not exist.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from bad_inputs.builders import Scene, write_malicious, write_onnx
from unetkit.checkpoint import load_checkpoint, make_checkpoint, save_checkpoint
from unetkit.config import load_config
from unetkit.errors import UnetkitError
from unetkit.infer.ensemble import write_ensemble
from unetkit.models.build import build_model

MALICIOUS = ["zip", "legacy", "pickle", "pickle2"]


def foreign_state_dict(s: Scene) -> list[str]:
    torch.save({"state_dict": build_model(load_config(s.config).model, 1, 2).state_dict()}, s.tmp / "other.pth")
    return s.predict(s.tmp / "other.pth")


def other_channel_count(s: Scene) -> list[str]:
    cfg = load_config(s.config, ["data.channels=3"])
    one_channel = build_model(cfg.model, 1, 2)  # weights for gray input under a config that reads RGB
    save_checkpoint(make_checkpoint(one_channel, cfg, epoch=0), s.tmp / "rgb.pt")
    return s.evaluate(s.tmp / "rgb.pt")


def text_file(s: Scene) -> list[str]:
    (s.tmp / "notes.pt").write_text("these are not weights\n")
    return s.predict(s.tmp / "notes.pt")


def missing(s: Scene) -> list[str]:
    return s.evaluate(s.tmp / "missing.pt")


def truncated(s: Scene) -> list[str]:
    data = s.checkpoint.read_bytes()
    (s.tmp / "cut.pt").write_bytes(data[: len(data) // 2])
    return s.evaluate(s.tmp / "cut.pt")


def newer_version(s: Scene) -> list[str]:
    contents = load_checkpoint(s.checkpoint)
    torch.save({**contents, "version": 99}, s.tmp / "future.pt")
    return s.predict(s.tmp / "future.pt")


def without_weights(s: Scene) -> list[str]:
    contents = load_checkpoint(s.checkpoint)
    torch.save({k: v for k, v in contents.items() if k != "model"}, s.tmp / "hollow.pt")
    return s.predict(s.tmp / "hollow.pt")


def pickled_module(s: Scene) -> list[str]:
    torch.save(torch.nn.Linear(2, 2), s.tmp / "module.pt")  # a whole pickled object, as some tools save
    return s.predict(s.tmp / "module.pt")


def malicious(how: str, command: str) -> Callable[[Scene], list[str]]:
    def setup(s: Scene) -> list[str]:
        path = write_malicious(s.tmp / f"evil_{how}.pt", s.marker, how)
        return s.predict(path) if command == "predict" else s.evaluate(path)

    return setup


def corrupt_onnx(s: Scene) -> list[str]:
    (s.tmp / "model.onnx").write_bytes(np.random.default_rng(0).bytes(500))
    return s.predict(s.tmp / "model.onnx")


def foreign_onnx(s: Scene) -> list[str]:
    return s.evaluate(write_onnx(s.tmp / "foreign.onnx"))


def onnx_wrong_channels(s: Scene) -> list[str]:
    tree = load_config(s.config, ["data.channels=3"]).model_dump(mode="json")
    return s.predict(write_onnx(s.tmp / "gray.onnx", channels_in=1, cfg_tree=tree))  # its config reads RGB


def onnx_two_inputs(s: Scene) -> list[str]:
    return s.predict(write_onnx(s.tmp / "two.onnx", inputs=2, cfg_tree=load_config(s.config).model_dump()))


def onnx_fails_checker(s: Scene) -> list[str]:
    return s.predict(write_onnx(s.tmp / "broken.onnx", cfg_tree=load_config(s.config).model_dump(), broken=True))


def _ensemble(s: Scene, name: str, members: list[dict], weights: list[float]) -> Path:
    write_ensemble(s.tmp / name, members, [f"m{i}.pt" for i in range(len(members))], [1.0] * len(members))
    contents = torch.load(s.tmp / name, weights_only=True)
    torch.save({**contents, "weights": weights}, s.tmp / name)  # as a damaged or hand-edited file would hold
    return s.tmp / name


def ensemble_negative_weight(s: Scene) -> list[str]:
    member = load_checkpoint(s.checkpoint)
    return s.predict(_ensemble(s, "ens.pt", [member, member], [1.0, -0.5]))


def ensemble_nan_weight(s: Scene) -> list[str]:
    member = load_checkpoint(s.checkpoint)
    return s.evaluate(_ensemble(s, "ens.pt", [member, member], [1.0, float("nan")]))


def ensemble_other_classes(s: Scene) -> list[str]:
    other = load_checkpoint(s.checkpoint_with("other.pt", data={"classes": ["cell", "membrane"]}))
    return s.evaluate(_ensemble(s, "ens.pt", [load_checkpoint(s.checkpoint), other], [0.5, 0.5]))


def ensemble_foreign_member(s: Scene) -> list[str]:
    return s.predict(_ensemble(s, "ens.pt", [load_checkpoint(s.checkpoint), {"epoch": 3}], [0.5, 0.5]))


def resume_without_last_checkpoint(s: Scene) -> list[str]:
    (s.tmp / "runs" / "old").mkdir(parents=True)
    (s.tmp / "runs" / "old" / "config.yaml").write_text(s.config.read_text())  # a run that never saved
    return ["train", "--resume", str(s.tmp / "runs" / "old"), "-q"]


NOT_A_CHECKPOINT = "is not a unetkit checkpoint"
CODE = ["refuses to run code", "only load checkpoints you trust"]
CASES = [
    pytest.param(foreign_state_dict, [r"other\.pth", NOT_A_CHECKPOINT, "marker"], id="other-tool-state-dict"),
    pytest.param(other_channel_count, [r"rgb\.pt", "weights do not fit"], id="other-channel-count"),
    pytest.param(text_file, [r"notes\.pt", NOT_A_CHECKPOINT, "not a PyTorch file"], id="text-file"),
    pytest.param(missing, [r"missing\.pt", "does not exist"], id="missing-file"),
    pytest.param(truncated, [r"cut\.pt", NOT_A_CHECKPOINT, "truncated"], id="truncated"),
    pytest.param(newer_version, [r"future\.pt", "newer unetkit"], id="newer-format"),
    pytest.param(without_weights, [r"hollow\.pt", "no model weights"], id="no-weights"),
    pytest.param(pickled_module, [r"module\.pt", *CODE, r"torch\.nn\.modules\.linear\.Linear"],
                 id="pickled-module"),
    *(pytest.param(malicious(how, command), [rf"evil_{how}\.pt", *CODE], id=f"malicious-{how}-{command}")
      for how, command in (("zip", "predict"), ("pickle", "evaluate"))),
    pytest.param(corrupt_onnx, [r"model\.onnx", "not a readable ONNX model"], id="corrupt-onnx"),
    pytest.param(foreign_onnx, [r"foreign\.onnx", "not exported by unetkit"], id="foreign-onnx"),
    pytest.param(onnx_wrong_channels, [r"gray\.onnx", "float Nx1xHxW", r"float \(N, 3, H, W\)"],
                 id="onnx-wrong-channels"),
    pytest.param(onnx_two_inputs, [r"two\.onnx", "2 input"], id="onnx-two-inputs"),
    pytest.param(onnx_fails_checker, [r"broken\.onnx", "not a valid ONNX model"], id="onnx-fails-checker"),
    pytest.param(ensemble_negative_weight, [r"ens\.pt", "non-negative", "-0.5"], id="ensemble-negative-weight"),
    pytest.param(ensemble_nan_weight, [r"ens\.pt", "non-negative", "nan"], id="ensemble-nan-weight"),
    pytest.param(ensemble_other_classes, [r"ens\.pt \(member 2\)", "classes", "membrane"],
                 id="ensemble-other-classes"),
    pytest.param(ensemble_foreign_member, [r"ens\.pt \(member 2\)", NOT_A_CHECKPOINT], id="ensemble-foreign-member"),
    pytest.param(resume_without_last_checkpoint, [r"runs/old", r"no last\.pt"], id="resume-without-last-pt"),
]


@pytest.mark.parametrize("setup, patterns", CASES)
def test_bad_checkpoint(setup: Callable[[Scene], list[str]], patterns: list[str],
                        check_clean_error: Callable[..., str]) -> None:
    check_clean_error(setup, patterns)


@pytest.mark.parametrize("how", MALICIOUS)
def test_load_checkpoint_refuses_code_and_runs_none_of_it(how: str, tmp_path: Path) -> None:
    marker = tmp_path / "code_ran"
    path = write_malicious(tmp_path / f"evil_{how}.pt", marker, how)
    # the zip payload calls os.system; the others call pathlib.Path.touch (via getattr in protocol 2)
    called = {"zip": "system", "legacy": "getattr", "pickle": r"pathlib\.Path\.touch", "pickle2": "getattr"}[how]
    with pytest.raises(UnetkitError, match=rf"evil_{how}\.pt: unetkit refuses to run code .*{called}.*trust"):
        load_checkpoint(path)
    assert not marker.exists()


def test_training_state_of_plain_types_loads_under_the_allow_list(tmp_path: Path, tiny_checkpoint: Path) -> None:
    """What a run may add to a checkpoint loads with nothing allow-listed: python `random` state (a tuple of
    ints) and numpy's RNG state as a tensor plus a list of python numbers."""
    random.seed(3)
    np.random.seed(4)
    _, keys, position, has_gauss, cached = np.random.get_state()
    extra = {"rng_python": random.getstate(), "rng_numpy": torch.from_numpy(keys.astype(np.int64)),
             "rng_numpy_rest": [int(position), int(has_gauss), float(cached)]}
    save_checkpoint({**load_checkpoint(tiny_checkpoint), **extra}, tmp_path / "state.pt")
    loaded = load_checkpoint(tmp_path / "state.pt")
    assert loaded["rng_python"] == random.getstate()
    assert loaded["rng_numpy"].tolist() == keys.tolist() and loaded["rng_numpy_rest"] == [624, 0, 0.0]
