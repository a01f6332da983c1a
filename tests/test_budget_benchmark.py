"""The budget benchmark's stored results: the table names each row's machine, and the curve compares only rows
of one machine (a faster machine trains more in the same minutes) and leaves changed plans out."""

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
budget = pytest.importorskip("budget")

FAST = {"cpu": "AMD EPYC", "isa": ["avx2", "avx512f", "avx512_bf16"], "cores": 2}
OLD = {"cpu": "Intel(R) Xeon(R) Processor", "cores": 2}  # stored before the ISA was recorded


def _store(folder: Path, method: str, minutes: float, miou: float, where: dict, when: str = "2026-12-02T10:00:00",
           **extra: object) -> None:
    row = {"dataset": "camvid", "method": method, "minutes": minutes, "date": when,
           "machine": where, "scores": {"miou": miou}, **extra}
    tag = f"-{extra['variant']}" if "variant" in extra else ""
    (folder / f"budget-camvid-{method}{tag}-{minutes:g}min.json").write_text(json.dumps(row))


def test_machine_label_says_whether_the_cpu_has_bf16_units() -> None:
    assert budget.machine_label(FAST) == "AMD EPYC, AVX-512 bf16"
    assert budget.machine_label({"cpu": "AMD EPYC", "isa": ["avx2"]}) == "AMD EPYC, no AVX-512 bf16"
    assert budget.machine_label(OLD) == "Intel Xeon"


def test_curve_compares_latest_rows_of_one_machine_and_leaves_changed_plans_out(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(budget, "RESULTS", tmp_path)
    _store(tmp_path, "unetkit", 5, 0.24, FAST, variant="epyc", overrides=[])
    _store(tmp_path, "unetkit", 10, 0.25, FAST, "2026-12-02T09:00:00", variant="older", overrides=[])  # rerun
    _store(tmp_path, "unetkit", 10, 0.28, FAST, variant="epyc", overrides=[])
    _store(tmp_path, "monai", 10, 0.27, FAST, variant="epyc", overrides=[], reference_step_seconds=[1.1, 1.3])
    _store(tmp_path, "unetkit", 5, 0.31, FAST, variant="half", overrides=["data.scale=0.5"])  # a changed plan
    _store(tmp_path, "unetkit", 10, 0.23, OLD)
    _store(tmp_path, "monai", 10, 0.20, OLD)
    lines = budget.curves().splitlines()
    assert lines == [
        "camvid (AMD EPYC, AVX-512 bf16): miou: unetkit 5 min 0.2400, 10 min 0.2800; best peer monai 10 min "
        "0.2700; unetkit reaches it at 10 min",
        "camvid (Intel Xeon): miou: unetkit 10 min 0.2300; best peer monai 10 min 0.2000; unetkit reaches it at "
        "10 min"]
    table = budget.table(None)
    assert "| camvid | unetkit (half: data.scale=0.5) | 5 | miou 0.3100 |" in table
    assert "| camvid | unetkit (older) | 10 | miou 0.2500 |" in table  # the table keeps every run
    assert table.count("| AMD EPYC, AVX-512 bf16 |") == 5 and table.count("| Intel Xeon |") == 2
    # how fast the machine ran just before and after the run, where it was measured
    assert "| monai (epyc) | 10 | miou 0.2700 |  |  |  | AMD EPYC, AVX-512 bf16 | 1.10 / 1.30 |" in table


def test_curve_takes_the_best_peer_of_each_score(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """ISBI has three scores and the peers differ in which they do best: each score is compared with its own best
    peer, and a score unetkit does not reach says so."""
    monkeypatch.setattr(budget, "RESULTS", tmp_path)
    runs = {("unetkit", 5): (0.080, 0.09, 0.80), ("unetkit", 10): (0.078, 0.06, 0.60),
            ("monai", 10): (0.079, 0.12, 0.79), ("smp", 10): (0.082, 0.11, 0.77), ("smp", 3): (0.10, 0.5, 2.0)}
    for (method, minutes), (pixel, rand, vi) in runs.items():
        row = {"dataset": "isbi2012", "method": method, "minutes": minutes, "date": "2026-12-03T10:00:00",
               "machine": FAST, "scores": {"pixel_error": pixel, "adapted_rand_error": rand, "vi": vi}}
        (tmp_path / f"budget-isbi2012-{method}-{minutes}min.json").write_text(json.dumps(row))
    lines = budget.curves().splitlines()
    where = "isbi2012 (AMD EPYC, AVX-512 bf16)"
    assert lines == [
        f"{where}: pixel_error: unetkit 5 min 0.0800, 10 min 0.0780; best peer monai 10 min 0.0790; "
        "unetkit reaches it at 10 min",
        f"{where}: adapted_rand_error: unetkit 5 min 0.0900, 10 min 0.0600; best peer smp 3 min 0.5000, 10 min "
        "0.1100; unetkit reaches it at 5 min",
        f"{where}: vi: unetkit 5 min 0.8000, 10 min 0.6000; best peer smp 3 min 2.0000, 10 min 0.7700; "
        "unetkit reaches it at 10 min"]
    row = json.loads((tmp_path / "budget-isbi2012-unetkit-10min.json").read_text())
    row["scores"]["pixel_error"] = 0.081
    (tmp_path / "budget-isbi2012-unetkit-10min.json").write_text(json.dumps(row))
    assert budget.curves().splitlines()[0].endswith("unetkit does not reach it in the budgets measured")


def test_curve_keeps_a_peers_best_rerun_and_unetkits_latest(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A peer's protocol never changes, so its best rerun is the one to beat; unetkit's plan may have changed between
    its reruns, so its latest run is the one that says what the command does now."""
    monkeypatch.setattr(budget, "RESULTS", tmp_path)
    _store(tmp_path, "monai", 10, 0.27, FAST, "2026-12-02T09:00:00", variant="first", overrides=[])
    _store(tmp_path, "monai", 10, 0.30, FAST, "2026-12-02T10:00:00", variant="second", overrides=[])
    _store(tmp_path, "monai", 10, 0.26, FAST, "2026-12-02T11:00:00", variant="third", overrides=[])
    _store(tmp_path, "unetkit", 10, 0.35, FAST, "2026-12-02T08:00:00", variant="old-plan", overrides=[])
    _store(tmp_path, "unetkit", 10, 0.29, FAST, "2026-12-02T12:00:00", variant="new-plan", overrides=[])
    assert budget.curves().splitlines() == [
        "camvid (AMD EPYC, AVX-512 bf16): miou: unetkit 10 min 0.2900; best peer monai 10 min 0.3000; "
        "unetkit does not reach it in the budgets measured"]
