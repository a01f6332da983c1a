"""The best result in the time a user has: `unetkit train DATA --minutes N` against three peers, same wall time.

    python benchmarks/budget.py --minutes 10                                   # every dataset, every method
    python benchmarks/budget.py --minutes 10 --datasets isbi2012 --methods unetkit
    python benchmarks/budget.py --table                                        # print the stored results
    python benchmarks/budget.py --datasets isbi2012 --methods unetkit --set model.norm=group --tag group-norm
    python benchmarks/budget.py --datasets isbi2012 --methods monai --tag epyc   # a rerun kept beside the first

Methods: `unetkit` (the command a user types: it plans, trains, chooses its threshold on its own validation
split, and its best.pt predicts the test images through `unetkit predict`), and the peers of budget_peers.py:
`monai` (BasicUNet, Adam 1e-3), `smp` (Unet resnet34, random init, Adam 1e-3), `tutorial` (padded U-Net + BN,
64-512 channels, Adam 1e-4). The peers train on the whole training split; unetkit holds part of it back to make
its choices. Splits: ISBI 2012 slices 0-24 / 25-29, the other datasets their train / test folders (CamVid's
val/ is given to unetkit as its validation folder). Every method is scored by budget_data.score.

Each (dataset, method, minutes) result is kept as JSON in benchmarks/results/ with the date, the machine and
the protocol, so a rerun of one method compares against stored results. `--set` changes the plan of unetkit's
run (a `--set` of `unetkit train`) to measure one choice against the plan's own; such a run needs a `--tag`, is
kept under its own name and stays out of the curve. `--tag` alone keeps a rerun (on another machine, say, as
the reference of a `--set` run there) under its own name; it counts in the curve of its machine (the CPU and
its vector extensions, as recorded), where unetkit's latest run of each budget counts and each peer's best.
Run it alone on the machine: the budget is wall time.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from budget_data import folder_view, load, score
from budget_peers import predict_peer, train_peer
from common import ROOT

PROTOCOL = ("crops 256, batch 4, flips + rot90, BCE/CE, Adam, fp32; whole-image prediction, reflect padding, "
            "threshold 0.5; unetkit: `unetkit train DATA --minutes N` then `unetkit predict best.pt`")
DATASETS = ("isbi2012", "kvasir_seg", "sandstone", "camvid")
METHODS = ("unetkit", "monai", "smp", "tutorial")
RESULTS = ROOT / "benchmarks" / "results"
# what a user knows about their data and the files cannot show: CamVid's void is the index 11 (its SOURCE.md)
USER_FACTS = {"camvid": ["--ignore", "11"]}


def machine() -> dict:
    """The CPU model alone does not tell two machines apart (one EPYC has AVX-512 bf16, another not): keep the ISA."""
    info = Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []
    cpu = next((line.split(":", 1)[1].strip() for line in info if line.startswith("model name")), platform.processor())
    flags = set(next((line.split(":", 1)[1].split() for line in info if line.startswith("flags")), []))
    isa = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f in flags]
    return {"cpu": cpu, "isa": isa, "cores": os.cpu_count(), "torch": torch.__version__,
            "threads": torch.get_num_threads()}


def run_unetkit(name: str, minutes: float, work: Path, overrides: list[str]) -> tuple[list[np.ndarray], dict]:
    from unetkit.config import load_config
    from unetkit.data.io import read_raw
    from unetkit.data.masks import MaskCodec

    dataset = load(name)
    data = folder_view(dataset, work / "data")
    shutil.rmtree(work / "runs", ignore_errors=True)  # else train writes run-2 and the last run's best.pt is scored
    began = time.perf_counter()
    cmd = [sys.executable, "-m", "unetkit", "train", str(data), "--minutes", str(minutes), "-q",
           "--set", f"train.output_dir={work / 'runs'}", "--set", "train.run_name=run", *USER_FACTS.get(name, [])]
    for assignment in overrides:
        cmd += ["--set", assignment]
    log = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - began
    (work / "train.log").write_text(log.stdout + log.stderr)
    if log.returncode:
        raise SystemExit(f"unetkit train failed ({log.returncode}); see {work / 'train.log'}")
    run = work / "runs" / "run"
    out = work / "predicted"
    subprocess.run([sys.executable, "-m", "unetkit", "predict", str(run / "best.pt"), *map(str, dataset.test.images),
                    "-o", str(out), "-q", "--overwrite"], check=True, capture_output=True)
    cfg = load_config(run / "config.yaml")
    codec = MaskCodec(cfg.data.mask, cfg.data.num_classes)
    preds = [codec.decode(read_raw(out / f"{p.stem}.png")) for p in dataset.test.images]
    summary = json.loads((run / "summary.json").read_text()) if (run / "summary.json").is_file() else {}
    return preds, {"train_wall_seconds": wall, "summary": summary, "plan": (run / "plan.yaml").read_text()
                   if (run / "plan.yaml").is_file() else None}


def reference_step() -> float:
    """Seconds per training step of one fixed network (unetkit's padded U-Net, 16 base channels, depth 5, fp32,
    a batch of 4 gray 256x256 crops). A shared host runs the same machine at different speeds at different hours
    (one 2-core EPYC took 0.28 to 0.56 s per planned step of one Kvasir-SEG plan), so every result keeps this
    figure, measured just before and just after it: results are comparable only at similar figures."""
    from unetkit.config import config_from_dict
    from unetkit.train.measure import time_training_step

    cfg = config_from_dict({"data": {"classes": ["a", "b"], "channels": 1, "crop_size": 256, "batch_size": 4},
                            "model": {"base_channels": 16, "depth": 5}}, "reference")
    return round(time_training_step(cfg, torch.device("cpu"), steps=5), 3)


def run_one(name: str, method: str, minutes: float, work: Path, overrides: list[str], tag: str | None) -> dict:
    began = datetime.datetime.now().isoformat(timespec="seconds")
    before = reference_step()
    if method == "unetkit":
        preds, info = run_unetkit(name, minutes, work / f"{name}-{method}", overrides)
    else:
        dataset = load(name)
        model, info = train_peer(method, dataset, 60 * minutes)
        preds = predict_peer(method, model, dataset)
    result = {"dataset": name, "method": method, "minutes": minutes, "date": began, "machine": machine(),
              "protocol": PROTOCOL, "scores": score(load(name), preds), **info,
              "reference_step_seconds": [before, reference_step()]}
    if tag:
        result |= {"variant": tag, "overrides": overrides}
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"budget-{name}-{method}{f'-{tag}' if tag else ''}-{minutes:g}min.json"
    path.write_text(json.dumps(result, indent=1))
    print(f"{name:10s} {method:9s} {json.dumps(result['scores'])}  -> {path.relative_to(ROOT)}", flush=True)
    return result


HEADLINE = {"isbi2012": ("pixel_error", "adapted_rand_error", "vi"), "kvasir_seg": ("dice", "fg_iou"),
            "sandstone": ("miou",), "camvid": ("miou",)}
LOWER_IS_BETTER = {"pixel_error", "adapted_rand_error", "vi"}


def table(minutes: float | None) -> str:
    rows = [json.loads(p.read_text()) for p in sorted(RESULTS.glob("budget-*.json"))]
    rows = [r for r in rows if minutes is None or r["minutes"] == minutes]
    lines = ["| dataset | method | minutes | score 1 | score 2 | score 3 | steps or epochs | machine | reference step "
             "before / after (s) | date |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: (r["dataset"], r["minutes"], METHODS.index(r["method"]))):
        keys = HEADLINE[r["dataset"]]
        cells = [f"{k} {r['scores'][k]:.4f}" for k in keys] + [""] * (3 - len(keys))
        work = r.get("steps") or (r.get("summary") or {}).get("epochs", "")
        changed = " ".join(r.get("overrides") or [])
        method = f"{r['method']} ({r['variant']}{': ' + changed if changed else ''})" if r.get("variant") \
            else r["method"]
        speed = " / ".join(f"{t:.2f}" for t in r.get("reference_step_seconds") or [])  # older rows: none
        lines.append(f"| {r['dataset']} | {method} | {r['minutes']:g} | " + " | ".join(cells)
                     + f" | {work} | {machine_label(r['machine'])} | {speed} | {r['date'][:10]} |")
    return "\n".join(lines)


def machine_label(info: dict) -> str:
    """'AMD EPYC, AVX-512 bf16': the CPU and whether it has the bf16 vector units the planner times (results
    stored before the ISA was recorded say only the CPU)."""
    cpu = info["cpu"].replace("(R)", "").replace(" Processor", "")
    if "isa" not in info:
        return cpu
    return f"{cpu}, {'AVX-512 bf16' if 'avx512_bf16' in info['isa'] else 'no AVX-512 bf16'}"


def curves() -> str:
    """Per dataset, machine and headline score (a faster machine trains more in the same minutes, so only results
    of one machine are compared): unetkit's score at each budget measured, the best peer's for that score (best at
    10 minutes; peers differ in which score they do best) at each of its budgets, and the fewest minutes measured
    at which unetkit reaches that peer's 10-minute score. Runs of a changed plan (`--set`) stay out. Of unetkit's
    reruns of one budget on one machine the latest counts (the plan may have changed since); a peer's protocol does
    not change, so every rerun of it stays and its best run of each score counts (the harder comparison)."""
    runs = [r for p in sorted(RESULTS.glob("budget-*.json")) if not (r := json.loads(p.read_text())).get("overrides")]
    latest = {(r["dataset"], machine_label(r["machine"]), r["minutes"]): r
              for r in sorted(runs, key=lambda r: r["date"]) if r["method"] == "unetkit"}
    rows = list(latest.values()) + [r for r in runs if r["method"] != "unetkit"]
    lines = []
    for name, where in sorted({(r["dataset"], machine_label(r["machine"])) for r in rows}):
        mine = [r for r in rows if r["dataset"] == name and machine_label(r["machine"]) == where]
        lines += [line for key in HEADLINE[name] if (line := _curve(f"{name} ({where})", key, mine))]
    return "\n".join(lines)


def _curve(label: str, key: str, mine: list[dict]) -> str | None:
    """One line of `curves` for one score of one dataset on one machine; None when a side has no run."""
    mine = [r for r in mine if key in r["scores"]]
    better = (lambda a, b: a <= b) if key in LOWER_IS_BETTER else (lambda a, b: a >= b)
    peers = [r for r in mine if r["method"] != "unetkit" and r["minutes"] == 10]
    ours = sorted((r for r in mine if r["method"] == "unetkit"), key=lambda r: r["minutes"])
    if not peers or not ours:
        return None
    pick = min if key in LOWER_IS_BETTER else max
    best = pick(peers, key=lambda r: r["scores"][key])
    reach = next((r["minutes"] for r in ours if better(r["scores"][key], best["scores"][key])), None)
    shown = ", ".join(f"{r['minutes']:g} min {r['scores'][key]:.4f}" for r in ours)
    theirs: dict[float, float] = {}  # the peer's best score at each of its budgets
    for r in mine:
        if r["method"] == best["method"]:
            theirs[r["minutes"]] = pick(theirs.get(r["minutes"], r["scores"][key]), r["scores"][key])
    peer = ", ".join(f"{minutes:g} min {score:.4f}" for minutes, score in sorted(theirs.items()))
    return (f"{label}: {key}: unetkit {shown}; best peer {best['method']} {peer}; "
            + (f"unetkit reaches it at {reach:g} min" if reach is not None
               else "unetkit does not reach it in the budgets measured"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--datasets", nargs="+", choices=DATASETS, default=list(DATASETS))
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    parser.add_argument("--work", default=str(ROOT / "runs" / "bench-budget"), help="scratch folder")
    parser.add_argument("--table", action="store_true", help="only print the stored results")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="change unetkit's plan (as `unetkit train --set`); needs --tag")
    parser.add_argument("--tag", help="name of a variant or rerun, kept beside the plan's own stored result")
    args = parser.parse_args()
    if args.set and not args.tag:
        parser.error("--set needs --tag: a changed plan is kept under its own name")
    if args.set and set(args.methods) != {"unetkit"}:
        parser.error("--set changes unetkit's plan: use it with --methods unetkit")
    if not args.table:
        for name in args.datasets:
            for method in args.methods:
                run_one(name, method, args.minutes, Path(args.work) / f"{args.minutes:g}min", args.set, args.tag)
    print(table(None if args.table else args.minutes))
    print(curves())


if __name__ == "__main__":
    main()
