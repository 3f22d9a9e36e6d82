"""Stopping a run on SIGTERM/SIGINT: between epochs, models and publishes.

A Kubernetes Job gets SIGTERM when it is deleted or times out. The run then stops at the
next check, publishes nothing it has not published yet, and exits 1.
"""

from __future__ import annotations

import threading

from services.trainer.errors import TrainerError


class Interrupted(TrainerError):
    """The run was asked to stop."""


#: Set by the CLI's StopEvent (services.common.lifecycle) or by tests.
STOP: threading.Event = threading.Event()


def check(where: str) -> None:
    if STOP.is_set():
        raise Interrupted(f"stopped during {where}; nothing more is published")
