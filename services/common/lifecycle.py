"""One stop event per process, set by SIGTERM/SIGINT.

The shape every service follows (after Frigate's ``app.py``)::

    stop = StopEvent.install()
    service = Service(config)
    try:
        service.start()
        stop.wait()
    finally:
        service.stop()   # mark not ready, stop input, flush buffers, join workers
"""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType

log = logging.getLogger(__name__)


class StopEvent(threading.Event):
    """A threading.Event that remembers which signal set it."""

    signal_name: str | None = None

    @classmethod
    def install(
        cls, signals: tuple[signal.Signals, ...] = (signal.SIGTERM, signal.SIGINT)
    ) -> StopEvent:
        event = cls()

        def _handler(signum: int, _frame: FrameType | None) -> None:
            name = signal.Signals(signum).name
            if event.is_set():
                log.warning("%s again while stopping; still flushing", name)
                return
            event.signal_name = name
            log.info("%s received, stopping", name)
            event.set()

        if threading.current_thread() is threading.main_thread():
            for sig in signals:
                signal.signal(sig, _handler)
        return event
