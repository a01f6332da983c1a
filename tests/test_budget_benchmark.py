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
    _store(tmp_path, "monai", 10, 0.27, FAST, variant="epyc", overrides=[])
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
