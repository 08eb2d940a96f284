"""SIGINT and SIGTERM as one orderly stop, for every long-running command.

The first signal unwinds the run like an exception (:class:`Interrupted`), so
every ``finally`` stops what it started and the command still writes a report
marked interrupted; the exit status is ``128 + signal`` (130 for Ctrl-C, 143
for SIGTERM, the shell's convention). A second signal does not wait for that
polite stop: every child still registered here (each :class:`~drift.harness.child.Child`
registers itself while it runs) is killed with its process group, and the
process exits at once with the same status.

Sync code installs :func:`raise_on_signals`; an event loop uses
:func:`cancel_on_signals`, which cancels the main task instead of raising
inside the loop (the coroutine then turns the cancellation into its partial
report and returns).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from types import FrameType
from typing import Final

from drift.exitcodes import ExitCode

#: the signals a run stops on
STOP_SIGNALS: Final = (signal.SIGINT, signal.SIGTERM)

#: process groups of children started and not yet stopped (pid -> name), killed on a second signal
_children: dict[int, str] = {}
#: the first stop signal received by this process, if any
_received: list[int] = []


class Interrupted(KeyboardInterrupt):
    """The run was stopped by ``signum``; the process exits with ``128 + signum``."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def signal_name(self) -> str:
        return signal.Signals(self.signum).name

    @property
    def exit_code(self) -> int:
        return exit_code_for(self.signum)


def exit_code_for(signum: int) -> int:
    """130 for SIGINT, 143 for SIGTERM (``128 + signal``)."""
    if signum == signal.SIGINT:
        return int(ExitCode.INTERRUPTED)
    if signum == signal.SIGTERM:
        return int(ExitCode.TERMINATED)
    return 128 + signum


def received() -> int | None:
    """The first stop signal this process got, or None."""
    return _received[0] if _received else None


def register_child(pid: int, name: str) -> None:
    """A child (leading its own process group) to kill if a second signal forces the exit."""
    _children[pid] = name


def unregister_child(pid: int) -> None:
    _children.pop(pid, None)


def _force_exit(signum: int) -> None:
    """The second signal: kill every child's group now and leave without any cleanup."""
    for pid in list(_children):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
    with contextlib.suppress(OSError):
        os.write(2, f"drift: {signal.Signals(signum).name} again: stopped at once\n".encode())
    os._exit(exit_code_for(received() or signum))


def _first(signum: int) -> bool:
    """Record ``signum``; False (after forcing the exit) when a stop is already under way."""
    if _received:
        _force_exit(signum)
        return False
    _received.append(signum)
    return True


def _main_thread() -> bool:
    # Python delivers signals to the main thread only; elsewhere (a test running a
    # command in a thread) the handlers stay the caller's.
    return threading.current_thread() is threading.main_thread()


def raise_on_signals() -> None:
    """From now on the first SIGINT/SIGTERM raises :class:`Interrupted` in the main thread."""
    if not _main_thread():
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        if _first(signum):
            raise Interrupted(signum)

    for signum in STOP_SIGNALS:
        signal.signal(signum, handler)


def ignore_signals() -> None:
    """For a worker process whose parent stops it: a terminal's Ctrl-C reaches the whole
    foreground group, and a worker that raised KeyboardInterrupt would print a traceback
    each. SIGTERM keeps its default (a silent exit), which is how the parent stops it."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


@contextlib.contextmanager
def cancel_on_signals(
    loop: asyncio.AbstractEventLoop, task: asyncio.Task[object]
) -> Iterator[None]:
    """While inside, the first SIGINT/SIGTERM cancels ``task`` (see :func:`received`).

    On the way out the sync handlers of :func:`raise_on_signals` are back (the loop
    would otherwise leave the default ones, under which SIGTERM kills at once).
    """

    def handler(signum: int) -> None:
        if _first(signum):
            task.cancel()

    if not _main_thread():
        yield
        return
    for signum in STOP_SIGNALS:
        loop.add_signal_handler(signum, handler, signum)
    try:
        yield
    finally:
        for signum in STOP_SIGNALS:
            with contextlib.suppress(Exception):
                loop.remove_signal_handler(signum)
        raise_on_signals()


def exit_interrupted(signum: int, what: str = "") -> None:
    """One line on stderr and the exit status of ``signum``."""
    name = signal.Signals(signum).name
    sys.stderr.write(f"drift: interrupted by {name}{'; ' + what if what else ''}\n")
    sys.stderr.flush()
    sys.exit(exit_code_for(signum))


@contextlib.contextmanager
def interruptible(report: Callable[[Interrupted], str] | None = None) -> Iterator[None]:
    """Run a sync command body under :func:`raise_on_signals`; an interruption exits 130/143.

    ``report`` (given the interruption) writes the partial report and returns the
    line to print (e.g. its path).
    """
    raise_on_signals()
    try:
        yield
    except Interrupted as exc:
        what = report(exc) if report is not None else ""
        exit_interrupted(exc.signum, what)
