"""An MLflow run per training run: the resolved config as params, the metrics.csv rows as metrics, the files.

Where: `MLFLOW_TRACKING_URI` when set (a tracking server, `sqlite:///...`, ...), else MLflow's file store in
`RUN/mlruns/`, which keeps the run self-contained and needs nothing beyond mlflow-skinny (a database store
needs SQLAlchemy, which mlflow-skinny does not bring). MLflow 3 refuses file stores unless
`MLFLOW_ALLOW_FILE_STORE=true`; the run sets it while it opens its own store only. To browse it:
`MLFLOW_ALLOW_FILE_STORE=true mlflow ui --backend-store-uri RUN/mlruns` (the full mlflow package).

The experiment is named after the folder holding the run folder (`train.output_dir`), the MLflow run after
the run folder. Params are the config's keys flattened (`optim.lr`, `data.crop_size`, ...); metrics are
the metrics.csv columns, step = epoch; a finished run gets best.pt, report.html (when the run folder has one),
config.yaml and metrics.csv as artifacts. The MLflow run id is kept in `RUN/mlflow_run.json`, so
`--resume` continues the same MLflow run (params of the first start stay: MLflow does not allow changing one).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from unetkit.atomic import atomic_write
from unetkit.config import Config
from unetkit.train.trackers import Status, epoch_scalars, require

RUN_FILE = "mlflow_run.json"  # {"run_id", "tracking_uri"} of the MLflow run this run folder logs to
ARTIFACTS = ("best.pt", "report.html", "config.yaml", "metrics.csv")
MAX_PARAM_CHARS = 6000  # MLflow's limit on one param value; longer ones (an augmentation list) are cut
PARAMS_PER_BATCH = 100  # MLflow's limit on params in one log_batch call
# a server that is down should cost a run seconds, not MLflow's default minutes of retries; the user's own
# settings of these variables are kept
SERVER_PATIENCE = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_TIMEOUT": "20"}


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """`{"optim": {"lr": 0.01}}` -> `{"optim.lr": "0.01"}`; lists as JSON (`[0.5]`), None as `None`."""
    flat: dict[str, str] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{name}."))
        else:
            text = json.dumps(value) if isinstance(value, list | dict) else str(value)
            flat[name] = text[:MAX_PARAM_CHARS]
    return flat


def tracking_uri(run_dir: Path, saved: dict[str, Any] | None) -> str:
    """MLFLOW_TRACKING_URI, else the server a resumed run first logged to, else the file store RUN/mlruns."""
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    first = (saved or {}).get("tracking_uri", "")
    if first and not first.startswith("file:"):  # a local store is found again from the (maybe moved) folder
        return first
    return (run_dir / "mlruns").resolve().as_uri()


@contextmanager
def file_store_allowed(uri: str) -> Iterator[None]:
    """MLflow 3's opt-in for file stores, set while the client opens one (MLflow keeps the opened store)."""
    if not uri.startswith("file:") or "MLFLOW_ALLOW_FILE_STORE" in os.environ:
        yield
        return
    os.environ["MLFLOW_ALLOW_FILE_STORE"] = "true"
    try:
        yield
    finally:
        os.environ.pop("MLFLOW_ALLOW_FILE_STORE", None)


class MlflowTracker:
    """`train.loggers: [mlflow]`: one MLflow run, continued on resume."""

    name = "mlflow"

    def __init__(self) -> None:
        self._mlflow = require("mlflow.tracking", "mlflow-skinny", self.name)
        self._entities = require("mlflow.entities", "mlflow-skinny", self.name)
        self._client: Any = None
        self.run_id: str | None = None

    def start(self, run_dir: Path, cfg: Config, first_epoch: int) -> None:
        record = run_dir / RUN_FILE
        saved = json.loads(record.read_text()) if record.is_file() else None
        uri = tracking_uri(run_dir, saved)
        if uri.startswith(("http:", "https:")):
            for key, value in SERVER_PATIENCE.items():
                os.environ.setdefault(key, value)
        with file_store_allowed(uri):
            client = self._mlflow.MlflowClient(tracking_uri=uri)
        if saved is not None:  # a resumed run: the MLflow run it began (an unknown id fails here, loudly)
            run = client.get_run(saved["run_id"])
            client.update_run(run.info.run_id, status="RUNNING")
        else:
            where = run_dir.resolve()
            experiment_name = where.parent.name or where.name
            found = client.get_experiment_by_name(experiment_name)
            experiment_id = found.experiment_id if found else client.create_experiment(experiment_name)
            run = client.create_run(experiment_id, run_name=run_dir.name, tags={"unetkit.run_dir": str(where)})
            with atomic_write(record, "w") as f:
                json.dump({"run_id": run.info.run_id, "tracking_uri": uri}, f)
        self._client, self.run_id = client, run.info.run_id
        known = run.data.params
        params = [self._entities.Param(key, value) for key, value in flatten(cfg.model_dump(mode="json")).items()
                  if key not in known]
        for begin in range(0, len(params), PARAMS_PER_BATCH):
            client.log_batch(self.run_id, params=params[begin:begin + PARAMS_PER_BATCH])

    def log_epoch(self, row: dict[str, Any], samples: Path | None) -> None:
        now = int(time.time() * 1000)
        metrics = [self._entities.Metric(key, value, now, int(row["epoch"]))
                   for key, value in epoch_scalars(row).items()]
        self._client.log_batch(self.run_id, metrics=metrics)

    def finish(self, run_dir: Path, status: Status) -> None:
        if self._client is None:
            return
        if status == "FINISHED":
            for name in ARTIFACTS:
                if (run_dir / name).is_file():
                    self._client.log_artifact(self.run_id, str(run_dir / name))
        self._client.set_terminated(self.run_id, status)
        self._client = None
