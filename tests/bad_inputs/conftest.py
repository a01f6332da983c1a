"""Fixtures of the bad-input corpus.

`check_clean_error` runs the real CLI in-process and asserts the contract of every user mistake: exit status 2,
exactly one stderr line `unetkit: error: ...` naming the culprit, no traceback, and the test folder exactly as
it was before the command (nothing half-written: no run folder, no `.tmp` file, outputs unchanged).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from bad_inputs.builders import Scene, snapshot
from unetkit.cli import main
from unetkit.data.io import set_pixel_limit


@pytest.fixture(autouse=True)
def _restore_pixel_limit() -> Iterator[None]:
    """predict / evaluate apply their checkpoint's pixel limit process-wide; put the default back."""
    previous = set_pixel_limit(None)
    set_pixel_limit(previous)
    yield
    set_pixel_limit(previous)


@pytest.fixture
def scene(tmp_path: Path, tiny_dataset: Path, tiny_config: Path, tiny_checkpoint: Path,
          monkeypatch: pytest.MonkeyPatch, tiny_config_writer: Callable[..., Path]) -> Scene:
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("the output folder held this before\n")
    return Scene(tmp_path, tiny_dataset, tiny_config, tiny_checkpoint, monkeypatch, tiny_config_writer)


@pytest.fixture
def check_clean_error(scene: Scene, capsys: pytest.CaptureFixture[str]) -> Callable[..., str]:
    """Run `setup(scene)`'s command line and check the one-line error contract; returns the message."""

    def run(setup: Callable[[Scene], list[str]], patterns: list[str]) -> str:
        argv = setup(scene)
        capsys.readouterr()  # what the setup printed is not the command's
        before = snapshot(scene.tmp)
        status = main(argv)
        out, err = capsys.readouterr()
        lines = err.splitlines()
        assert status == 2, (status, err)
        assert len(lines) == 1 and lines[0].startswith("unetkit: error: "), err
        assert "Traceback" not in err and out == ""
        for pattern in patterns:
            assert re.search(pattern, lines[0]), f"{pattern!r} not in {lines[0]!r}"
        assert snapshot(scene.tmp) == before  # no run folder, no .tmp file, no output touched
        assert not scene.marker.exists()
        return lines[0]

    return run
