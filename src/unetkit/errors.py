"""The one exception type for user mistakes.

Bad data, a wrong config key, an unreadable checkpoint: these are the user's to fix, so they raise
`UnetkitError` with a message that names the file, key or value and says what to do. The CLI prints it on
one line and exits with status 2. Bugs still raise ordinary exceptions with tracebacks. A missing optional
package is such a mistake too (`require_extra`).
"""

from __future__ import annotations

import importlib
from types import ModuleType


def require_extra(module: str, extra: str, needs: str, package: str | None = None) -> ModuleType:
    """Import `module`, part of the optional extra `extra`; when it is missing, one line saying how to install
    it: "NEEDS the PACKAGE package; pip install 'unetkit[EXTRA]'" (`needs`: what needs it, with its verb)."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise UnetkitError(f"{needs} the {package or module} package; pip install 'unetkit[{extra}]'") from None


class UnetkitError(Exception):
    """A problem with the user's data, config, checkpoint or arguments (not a bug in unetkit)."""


class TrainingStopped(Exception):
    """Training ended early on SIGINT or SIGTERM, after saving a checkpoint to resume from.

    Not an error: the CLI prints the message (how to resume) and exits 130 for SIGINT, 143 for SIGTERM, the
    codes a shell reports for a process ended by those signals.
    """

    def __init__(self, message: str, signal_name: str) -> None:
        super().__init__(message)
        self.signal_name = signal_name
        self.exit_code = 143 if signal_name == "SIGTERM" else 130
