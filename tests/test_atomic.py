"""`atomic_write`: the target is the old file or the new one, never half of one, and no temporary file stays."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from unetkit.atomic import _UMASK, atomic_write


def test_contents_replace_the_target_only_when_the_block_ends(tmp_path: Path) -> None:
    target = tmp_path / "last.pt"
    target.write_bytes(b"old")
    with atomic_write(target) as f:
        f.write(b"new")
        assert target.read_bytes() == b"old"  # readers see the previous file meanwhile
        assert (tmp_path / ".last.pt.tmp").is_file()  # the fixed name a resumed run sweeps up
    assert target.read_bytes() == b"new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]


@pytest.mark.parametrize("unique", [False, True])
def test_a_failure_keeps_the_target_and_removes_the_temporary_file(tmp_path: Path, unique: bool) -> None:
    target = tmp_path / "mask.png"
    target.write_bytes(b"old")
    with pytest.raises(KeyboardInterrupt), atomic_write(target, unique=unique) as f:
        f.write(b"half")
        raise KeyboardInterrupt
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mask.png"]


def test_unique_names_let_two_writers_share_a_target(tmp_path: Path) -> None:
    target = tmp_path / "a.npy"
    with atomic_write(target, unique=True) as first, atomic_write(target, unique=True) as second:
        first.write(b"1")
        second.write(b"2")
        names = sorted(p.name for p in tmp_path.iterdir())
        assert len(names) == 2 and all(n.startswith(".a.npy.") and n.endswith(".tmp") for n in names)
    assert target.read_bytes() == b"1"  # the last one to finish wins, whole
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o666 & ~_UMASK  # not mkstemp's owner-only 0600


def test_text_mode_keeps_newlines_as_written(tmp_path: Path) -> None:
    target = tmp_path / "metrics.csv"
    with atomic_write(target, "w", newline="") as f:
        f.write("epoch,loss\r\n1,0.5\r\n")
    assert target.read_bytes() == b"epoch,loss\r\n1,0.5\r\n"
