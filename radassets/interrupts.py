"""Interrupts of a command: SIGINT (Ctrl-C), SIGTERM and SIGHUP (the terminal closed) stop it as a whole.

Between runs an interrupt raises ``Interrupted`` at once. During a Dagster run, Dagster holds SIGINT and
SIGTERM itself: it stops the current step (the run ends FAILURE, "interrupted") but then returns as if
nothing had happened, and an interrupt between two steps is noted only until the run ends. So that no
later run starts after an interrupt, every signal is also written to a pipe (``signal.set_wakeup_fd``,
which the interpreter fills whichever Python handler is in place), and ``raise_if_interrupted`` reads
it after each run. SIGHUP, which Dagster does not handle, is passed to whichever SIGINT handler is in
place, so that during a run it stops the step as Ctrl-C would.

Exit status: 128 + the signal number (130 for SIGINT, 143 for SIGTERM, 129 for SIGHUP), as shells report.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

INTERRUPTS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Interrupted(KeyboardInterrupt):
    """The command received SIGINT, SIGTERM or SIGHUP."""

    def __init__(self, signum: int, run_id: str | None = None):
        super().__init__(signum)
        self.signum = signum
        self.run_id = run_id  # the run that was executing, if any

    @property
    def signal_name(self) -> str:
        return signal.Signals(self.signum).name

    @property
    def exit_status(self) -> int:
        return 128 + self.signum


_wakeup_read_fd: int | None = None


def _raise_interrupted(signum, frame) -> None:
    raise Interrupted(signum)


def _hangup(signum, frame) -> None:
    handler = signal.getsignal(signal.SIGINT)  # ours between runs, Dagster's during one
    if callable(handler):
        handler(signum, frame)
    else:
        raise Interrupted(signum)


@contextmanager
def stop_on_interrupts() -> Iterator[None]:
    """Within: SIGINT, SIGTERM and SIGHUP raise ``Interrupted`` and are recorded for ``raise_if_interrupted``.
    The previous handlers are restored on exit. Does nothing outside the main thread (signals go there)."""
    global _wakeup_read_fd
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.getsignal(sig) for sig in INTERRUPTS}
    read_fd, write_fd = os.pipe()
    os.set_blocking(read_fd, False)
    os.set_blocking(write_fd, False)
    previous_wakeup = signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
    _wakeup_read_fd = read_fd
    try:
        signal.signal(signal.SIGINT, _raise_interrupted)
        signal.signal(signal.SIGTERM, _raise_interrupted)
        signal.signal(signal.SIGHUP, _hangup)
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        signal.set_wakeup_fd(previous_wakeup)
        _wakeup_read_fd = None
        os.close(read_fd)
        os.close(write_fd)


def received() -> int | None:
    """The first interrupt received since the last call (None if none, or outside ``stop_on_interrupts``)."""
    if _wakeup_read_fd is None:
        return None
    try:
        data = os.read(_wakeup_read_fd, 1024)
    except BlockingIOError:
        return None
    return next((signum for signum in data if signum in INTERRUPTS), None)


def raise_if_interrupted(run_id: str | None = None) -> None:
    signum = received()
    if signum is not None:
        raise Interrupted(signum, run_id)
