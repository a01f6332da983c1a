"""Experiment tracking: TensorBoard and MLflow hold exactly what metrics.csv holds, resume continues the same
records, and a tracker that fails costs one warning line, never the run."""

from __future__ import annotations

import csv
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from extras import require
from PIL import Image

from unetkit.config import load_config
from unetkit.errors import TrainingStopped, UnetkitError
from unetkit.train.mlflow_tracker import flatten
from unetkit.train.run import train
from unetkit.train.trackers import INSTALL_HINT, Trackers, open_trackers

event_accumulator = require("tensorboard.backend.event_processing.event_accumulator")
MlflowClient = require("mlflow.tracking").MlflowClient

ALL = "train.loggers=[csv, tensorboard, mlflow]"


@pytest.fixture
def tracked(tmp_path: Path, tiny_dataset: Path, tiny_config_writer: Callable[..., Path],
            monkeypatch: pytest.MonkeyPatch) -> Callable[..., Path]:
    """Factory: the tiny config (32 px, 4 base channels) with `--set` overrides, no tracking server set."""
    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_ALLOW_FILE_STORE"):
        monkeypatch.delenv(name, raising=False)
    path = tiny_config_writer(tiny_dataset, train={"epochs": 2, "run_name": "tracked"})

    def build(*overrides: str) -> Path:
        return load_config(path, list(overrides))

    return build


def csv_rows(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


def csv_scalars(rows: list[dict[str, str]]) -> dict[str, list[tuple[int, float]]]:
    """Column -> [(epoch, value)] of every numeric metrics.csv column but the epoch."""
    return {key: [(int(r["epoch"]), float(r[key])) for r in rows] for key in rows[0] if key != "epoch"}


def tensorboard_scalars(run_dir: Path) -> tuple[dict[str, list[tuple[int, float]]], object]:
    events = event_accumulator.EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0,
                                                                                             "images": 0})
    events.Reload()
    scalars = {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}
    return scalars, events


def mlflow_client(run_dir: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[MlflowClient, str]:
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # what a reader of a file store sets, as README says
    run_id = json.loads((run_dir / "mlflow_run.json").read_text())["run_id"]
    return MlflowClient(tracking_uri=(run_dir / "mlruns").resolve().as_uri()), run_id


def test_tensorboard_and_mlflow_hold_the_values_of_metrics_csv(tracked: Callable[..., Path],
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    run_dir = train(tracked(ALL, "optim.lr=0.01"), progress=False).run_dir
    assert "MLFLOW_ALLOW_FILE_STORE" not in os.environ  # set only while the run opened its store
    rows = csv_rows(run_dir)
    expected = csv_scalars(rows)
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    assert {"train_loss", "val_loss", "val_miou", "val_iou_foreground", "lr", "seconds"} <= set(expected)

    scalars, events = tensorboard_scalars(run_dir)
    assert set(scalars) == set(expected)  # same names, nothing more
    for tag, points in expected.items():
        assert [step for step, _ in scalars[tag]] == [1, 2]
        assert [v for _, v in scalars[tag]] == pytest.approx([v for _, v in points], rel=1e-6)  # float32
    with Image.open(run_dir / "samples" / "epoch_002.png") as picture:
        width, height = picture.size
    assert [(i.step, i.width, i.height) for i in events.Images("samples")] == [(1, width, height), (2, width, height)]

    client, run_id = mlflow_client(run_dir, monkeypatch)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.info.run_name == "tracked"
    assert client.get_experiment(run.info.experiment_id).name == "runs"  # the output dir of the tiny config
    params = run.data.params
    assert params["optim.lr"] == "0.01" and params["model.base_channels"] == "4" and params["train.epochs"] == "2"
    assert params["data.classes"] == '["background", "foreground"]'
    assert params["train.loggers"] == '["csv", "tensorboard", "mlflow"]'
    for key, points in expected.items():
        history = sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))
        assert history == points, key  # doubles, so exactly the numbers of metrics.csv
    artifacts = {a.path: a.file_size for a in client.list_artifacts(run_id)}
    assert set(artifacts) == {"best.pt", "config.yaml", "metrics.csv", "report.html"}
    assert artifacts["best.pt"] == (run_dir / "best.pt").stat().st_size


def test_resume_continues_the_same_mlflow_run_and_tensorboard_folder(tracked: Callable[..., Path],
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    first = train(tracked(ALL, "train.epochs=1"), progress=False).run_dir
    run_id = json.loads((first / "mlflow_run.json").read_text())["run_id"]
    second = train(load_config(first / "config.yaml", ["train.epochs=2"]), resume=first, progress=False).run_dir
    assert second == first
    assert json.loads((first / "mlflow_run.json").read_text())["run_id"] == run_id
    expected = csv_scalars(csv_rows(first))
    scalars, _ = tensorboard_scalars(first)
    assert len(list((first / "tensorboard").glob("events.out.tfevents.*"))) == 2  # one file per process
    assert [v for _, v in scalars["val_loss"]] == pytest.approx([v for _, v in expected["val_loss"]], rel=1e-6)
    assert [s for s, _ in scalars["val_loss"]] == [1, 2]
    client, _ = mlflow_client(first, monkeypatch)
    assert len(client.search_runs([client.get_run(run_id).info.experiment_id])) == 1
    assert sorted((m.step, m.value) for m in client.get_metric_history(run_id, "val_miou")) == expected["val_miou"]
    assert client.get_run(run_id).info.status == "FINISHED"
    assert client.get_run(run_id).data.params["train.epochs"] == "1"  # MLflow keeps a param's first value


def test_unreachable_tracking_server_is_one_warning_and_a_complete_run(
        tracked: Callable[..., Path], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")  # the discard port: nothing listens
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    result = train(tracked(ALL), progress=False)
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1
    assert warnings[0].startswith("warning: mlflow tracking failed while starting (MlflowException: ")
    assert [int(r["epoch"]) for r in csv_rows(result.run_dir)] == [1, 2]
    assert (result.run_dir / "best.pt").is_file() and (result.run_dir / "summary.json").is_file()
    assert not (result.run_dir / "mlflow_run.json").exists()
    scalars, _ = tensorboard_scalars(result.run_dir)  # the other tracker went on
    assert [s for s, _ in scalars["val_loss"]] == [1, 2]


def test_a_write_error_in_one_tracker_leaves_the_others_logging(tracked: Callable[..., Path],
                                                                monkeypatch: pytest.MonkeyPatch,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    from torch.utils.tensorboard import SummaryWriter

    def full_disk(self: SummaryWriter, tag: str, value: float, step: int) -> None:
        if step == 2:
            raise OSError(28, "No space left on device")

    monkeypatch.setattr(SummaryWriter, "add_scalar", full_disk)
    result = train(tracked("train.loggers=[tensorboard, mlflow]"), progress=False)
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]
    assert warnings == ["warning: tensorboard tracking failed while logging epoch 2 (OSError: [Errno 28] No space "
                        "left on device); it is off for the rest of the run, which goes on (the run folder has "
                        "every epoch)"]
    assert not (result.run_dir / "metrics.csv").exists()  # csv left out of train.loggers
    client, run_id = mlflow_client(result.run_dir, monkeypatch)
    got = sorted((m.step, m.value) for m in client.get_metric_history(run_id, "val_loss"))
    assert got == [(row["epoch"], row["val_loss"]) for row in result.history]
    assert {a.path for a in client.list_artifacts(run_id)} == {"best.pt", "config.yaml", "report.html"}


@pytest.mark.parametrize(("logger", "module"), [("mlflow", "mlflow.tracking"),
                                                ("tensorboard", "torch.utils.tensorboard")])
def test_missing_extra_is_one_line_before_any_work(tracked: Callable[..., Path], monkeypatch: pytest.MonkeyPatch,
                                                   tmp_path: Path, logger: str, module: str) -> None:
    monkeypatch.setitem(sys.modules, module, None)  # what `import` meets when the package is not installed
    with pytest.raises(UnetkitError) as caught:
        train(tracked(f"train.loggers=[csv, {logger}]"), progress=False)
    message = str(caught.value)
    assert message.startswith(f"train.loggers: {logger} needs the ") and message.endswith(INSTALL_HINT)
    assert "\n" not in message
    assert not (tmp_path / "runs").exists()  # no run folder: nothing was done


def test_unknown_logger_name_is_a_config_error(tracked: Callable[..., Path]) -> None:
    with pytest.raises(UnetkitError, match=r"--set train.loggers=\[csv, wandb\]: Input should be 'csv'"):
        tracked("train.loggers=[csv, wandb]")
    assert tracked().train.loggers == ["csv"]
    assert tracked("train.loggers=[mlflow, csv, mlflow]").train.loggers == ["mlflow", "csv"]


def test_only_rank_zero_tracks_and_a_failing_start_is_not_called_again() -> None:
    assert open_trackers(["csv", "tensorboard", "mlflow"], main=False).active == []
    assert [t.name for t in open_trackers(["mlflow", "tensorboard"], main=True).active] == ["tensorboard", "mlflow"]
    calls: list[str] = []

    class Broken:
        name = "broken"

        def start(self, run_dir: Path, cfg: object, first_epoch: int) -> None:
            raise ConnectionError("refused\nsecond line")

        def log_epoch(self, row: dict[str, object], samples: Path | None) -> None:
            calls.append("log")

        def finish(self, run_dir: Path, status: str) -> None:
            calls.append("finish")

    lines: list[str] = []
    group = Trackers([Broken()], warn=lines.append)
    with group.running(Path("."), None, 1):  # type: ignore[arg-type]
        group.log_epoch({"epoch": 1, "val_loss": 0.5}, None)
    assert calls == [] and group.active == []
    assert lines == ["warning: broken tracking failed while starting (ConnectionError: refused); it is off for the "
                     "rest of the run, which goes on (the run folder has every epoch)"]


def test_flatten_gives_dotted_keys_and_json_lists() -> None:
    tree = {"optim": {"lr": 0.01, "name": "adam"}, "data": {"mean": [0.5], "mask": {"palette": None}},
            "train": {"choose": [], "extra": {}}}
    assert flatten(tree) == {"optim.lr": "0.01", "optim.name": "adam", "data.mean": "[0.5]",
                             "data.mask.palette": "None", "train.choose": "[]", "train.extra": "{}"}


def test_the_end_of_a_run_is_its_status() -> None:
    ended: list[str] = []

    class Recording:
        name = "recording"

        def start(self, run_dir: Path, cfg: object, first_epoch: int) -> None:
            ended.append(f"start {first_epoch}")

        def log_epoch(self, row: dict[str, object], samples: Path | None) -> None:
            ended.append(f"epoch {row['epoch']} samples={samples}")

        def finish(self, run_dir: Path, status: str) -> None:
            ended.append(status)

    group = Trackers([Recording()], warn=ended.append)
    with pytest.raises(TrainingStopped), group.running(Path("."), None, 3):  # type: ignore[arg-type]
        group.log_epoch({"epoch": 3}, Path("no_such_picture.png"))  # a picture not drawn is passed as None
        raise TrainingStopped("stopped by SIGTERM", "SIGTERM")
    with pytest.raises(RuntimeError), group.running(Path("."), None, 4):  # type: ignore[arg-type]
        raise RuntimeError("a bug")
    with group.running(Path("."), None, 5):  # type: ignore[arg-type]
        pass
    assert ended == ["start 3", "epoch 3 samples=None", "KILLED", "start 4", "FAILED", "start 5", "FINISHED"]
