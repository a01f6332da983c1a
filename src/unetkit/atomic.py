"""Atomic file writes: a reader finds the old file or the new one, never half of one.

Checkpoints, exported models, masks, metrics.csv and cached weight maps outlive the process that writes them,
and a crash, a full disk or a SIGKILL can come at any byte. So each is written to a temporary file in the
target's own folder (a rename is atomic only within one file system), flushed and fsynced (the bytes are on
disk before the name points at them), then renamed over the target with `os.replace`. On any failure, Ctrl-C
included, the temporary file is removed and the target stays as it was. Temporary names start with a dot and
end in `.tmp`, so a resumed run can sweep up what a killed process left behind (`.*.tmp`).

Only the standard library is imported: every layer (`data/`, `models/`, `infer/`, `train/`) may use this.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import IO, Any


def _current_umask() -> int:
    mask = os.umask(0)  # the only way to read it; done once, at import, before any thread could race it
    os.umask(mask)
    return mask


_UMASK = _current_umask()


@contextmanager
def atomic_write(path: str | Path, mode: str = "wb", *, unique: bool = False,
                 newline: str | None = None) -> Iterator[IO[Any]]:
    """A file object to write `path`'s new contents to; they replace `path` only if the block succeeds.

    `mode` is "wb" (bytes) or "w" (text; `newline` as for `open`, "" for csv). The temporary file is
    `.NAME.tmp` next to `path` when one process owns the target (a run's checkpoints and metrics): the fixed
    name tells a resumed run what a killed one left. `unique=True` makes it `.NAME.<random>.tmp`, for targets
    that several processes may write at once (masks, weight maps cached by each loader worker), so no writer
    truncates another's unfinished file; such files get the usual permissions (0666 less the umask), not the
    owner-only ones `mkstemp` creates. The folder must exist. Errors propagate after the cleanup.
    """
    path = Path(path)
    if unique:
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)  # reopened by name: writers such as tifffile want a file object with a real `name`
        tmp = Path(name)
    else:
        tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, mode, newline=newline) as file:
            yield file
            file.flush()
            os.fsync(file.fileno())
        if unique:
            os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, path)
    except BaseException:
        with suppress(OSError):  # the failure to report is the one above, not the cleanup's
            tmp.unlink(missing_ok=True)
        raise
