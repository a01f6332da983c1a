"""Ctrl-C and SIGTERM during training: finish the step, save, stop; never kill a run mid-write.

A batch scheduler (SLURM, Kubernetes) sends SIGTERM before it kills a job; a user presses Ctrl-C. Either way the
handler only raises a flag; the training loop sees it between steps, writes `last.pt` and ends with a message
saying how to resume. A second Ctrl-C stops at once (the checkpoints on disk stay whole: they are written to a
temporary name and renamed).
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

from tqdm import tqdm

HANDLED = (signal.SIGINT, signal.SIGTERM)


class StopRequest:
    """The flag the training loop polls: `signal_name` is set once a stop signal arrived."""

    def __init__(self) -> None:
        self.signal_name: str | None = None

    @property
    def requested(self) -> bool:
        return self.signal_name is not None

    def handle(self, signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt  # second Ctrl-C: the user wants out now
        self.signal_name = name
        tqdm.write(f"{name} received: finishing this step and saving last.pt (press Ctrl-C again to stop at once)")


@contextmanager
def graceful_stop() -> Iterator[StopRequest]:
    """Install the handlers for the duration of a run, then restore the previous ones.

    Python delivers signals to the main thread only, so from any other thread this installs nothing and the
    request simply never fires.
    """
    request = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield request
        return
    previous = {sig: signal.getsignal(sig) for sig in HANDLED}
    for sig in HANDLED:
        signal.signal(sig, request.handle)
    try:
        yield request
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
