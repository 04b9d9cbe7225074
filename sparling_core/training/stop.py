"""A graceful stop for a training run: the first SIGTERM or SIGINT (Ctrl-C) asks the loop
to stop after the step in progress, so that it saves a resumable checkpoint with every
sample trained so far; a second one acts as it would without this (SIGINT raises
KeyboardInterrupt, SIGTERM ends the process). Without it a kill loses the work since the
last validation."""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType

logger = logging.getLogger(__name__)

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class StopRequest:
    """Context manager. `requested` names the signal once one has arrived (else None).
    Handlers are only installed from the main thread (Python allows no other); elsewhere,
    e.g. a training run started by a service in a worker thread, it never fires."""

    def __init__(self) -> None:
        self.requested: str | None = None
        self._previous: dict[int, object] = {}

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            for sig in SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.requested = signal.Signals(signum).name
        logger.warning("%s: stopping after this step and saving (send it again to stop "
                       "at once)", self.requested)
        self._restore()  # a second signal does what it would have done

    def _restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}

    def __exit__(self, *exc) -> None:
        self._restore()
