"""One child process: started, found ready from its own output, logged, stopped.

Its stdout is a pipe read until the ready line (``select`` with a deadline, so
readiness is the line itself, never a sleep); after that a background thread
copies the rest to the log file, or drops it, so a chatty child can never
block on a full pipe. stderr goes to the same log file (or nowhere, or the
caller's own stderr with ``inherit_stderr``).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import selectors
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Final, NoReturn, Self

from drift.errors import DriftError
from drift.harness import signals
from drift.harness.env import child_env
from drift.harness.waiting import wait_until

#: prctl(2) option: the signal this process gets when the thread that forked it dies
_PR_SET_PDEATHSIG: Final = 1


def _dies_with(parent: int) -> Callable[[], None]:
    """A ``preexec_fn``: SIGTERM this child when ``parent`` dies, even by SIGKILL (Linux).

    The kernel sends it when the *thread* that forked the child ends, so only a
    process's main thread may spawn a child this way. libc is looked up here,
    in the parent: the child between fork and exec does nothing but call it.
    """
    prctl = ctypes.CDLL(None, use_errno=True).prctl

    def arm() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os.kill(os.getpid(), signal.SIGTERM)

    return arm


def kill_group(pid: int) -> None:
    """SIGKILL the process group that child ``pid`` leads (not yet reaped, so still its own)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


class NotReady(DriftError):
    """The child exited (``code``) or stayed silent (``code`` None) before it was ready."""

    def __init__(self, message: str, code: int | None) -> None:
        super().__init__(message)
        self.code = code


class Child:
    """``argv`` as a child process; a context manager that stops it on the way out."""

    def __init__(
        self,
        argv: Sequence[str],
        *,
        name: str,
        log_path: Path | None = None,
        env: Mapping[str, str] | None = None,
        inherit_stderr: bool = False,
        cwd: Path | None = None,
        dies_with_parent: bool = False,
    ) -> None:
        self.argv = list(argv)
        #: SIGTERM when this process dies, however it dies (see :func:`_dies_with`)
        self.dies_with_parent = dies_with_parent and sys.platform == "linux"
        self.name = name
        self.log_path = log_path
        self.env = child_env(env)
        self.inherit_stderr = inherit_stderr
        self.cwd = cwd
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._drain: threading.Thread | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None, f"{self.name} is not started"
        return self.proc.pid

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> object:
        """Start the process; a subclass also waits until it is ready."""
        self.spawn()
        return None

    def spawn(self) -> None:
        """Start the process (not yet known to be ready)."""
        if self.log_path is not None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            # Unbuffered: what the child wrote is in the file at once, for whoever reads it.
            self._log = open(self.log_path, "ab", buffering=0)  # noqa: SIM115 - closed in stop()
        stderr: IO[bytes] | int | None = None
        if not self.inherit_stderr:
            stderr = self._log or subprocess.DEVNULL
        self.proc = subprocess.Popen(
            self.argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=stderr,
            env=self.env,
            cwd=self.cwd,
            # Its own process group: a terminal's Ctrl-C reaches only this process,
            # which stops the child itself, and a kill reaches whatever the child started.
            start_new_session=True,
            preexec_fn=_dies_with(os.getpid()) if self.dies_with_parent else None,
        )
        # so that a second Ctrl-C/SIGTERM, which skips every polite stop, still kills it
        signals.register_child(self.proc.pid, self.name)

    def wait_for_line(self, pattern: re.Pattern[str], timeout: float) -> re.Match[str]:
        """Read stdout until ``pattern`` matches; :class:`NotReady` on exit or after ``timeout``."""
        assert self.proc is not None and self.proc.stdout is not None
        out = self.proc.stdout
        deadline = time.monotonic() + timeout
        seen = b""
        with selectors.DefaultSelector() as sel:
            sel.register(out, selectors.EVENT_READ)
            while time.monotonic() < deadline:
                if not sel.select(timeout=max(0.0, deadline - time.monotonic())):
                    continue
                chunk = os.read(out.fileno(), 65536)
                if not chunk:  # stdout closed: the child exited
                    break
                seen += chunk
                if self._log is not None:
                    self._log.write(chunk)
                if match := pattern.search(seen.decode(errors="replace")):
                    self.drain()
                    return match
        self._not_ready(f"did not print {pattern.pattern!r} within {timeout:g} s")

    def wait_until(self, check: Callable[[], bool], timeout: float, what: str) -> None:
        """Wait for ``check`` (a real probe of the child); :class:`NotReady` on exit or timeout."""
        self.drain()
        try:
            wait_until(lambda: not self.running or check(), timeout, what=what)
        except TimeoutError:
            self._not_ready(f"{what}: not within {timeout:g} s")
        if not self.running:
            self._not_ready(what)

    def _not_ready(self, why: str) -> NoReturn:
        code = self.proc.poll() if self.proc is not None else None
        tail = self.log_tail()
        self.stop()
        if code is None:
            raise NotReady(f"{self.name} {why}" + (f"; its log ends: {tail}" if tail else ""), None)
        raise NotReady(f"{self.name} exited with code {code}: {tail or 'no output'}", code)

    def drain(self) -> None:
        """Copy the rest of stdout to the log (or nowhere) from a background thread."""
        if self._drain is not None or self.proc is None or self.proc.stdout is None:
            return
        self._drain = threading.Thread(
            target=self._copy, args=(self.proc.stdout,), name=f"{self.name}-stdout", daemon=True
        )
        self._drain.start()

    def _copy(self, out: IO[bytes]) -> None:
        with contextlib.suppress(OSError, ValueError):
            for chunk in iter(lambda: out.read1(65536), b""):  # type: ignore[attr-defined]
                if self._log is not None:
                    self._log.write(chunk)

    def log_tail(self, chars: int = 300) -> str:
        """The last line of the log, for an error message."""
        if self.log_path is None:
            return ""
        if self._log is not None:
            self._log.flush()
        try:
            lines = self.log_path.read_text(errors="replace").strip().splitlines()
        except OSError:
            return ""
        return lines[-1][:chars] if lines else ""

    def poll(self) -> int | None:
        """The exit code once it has exited; None while it runs (or before it started)."""
        return self.proc.poll() if self.proc is not None else None

    def send_signal(self, signum: int) -> None:
        if self.running:
            assert self.proc is not None
            self.proc.send_signal(signum)

    def wait(self, timeout: float | None = None) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def stop(self, timeout: float = 15.0, *, kill: bool = False) -> int | None:
        """SIGTERM (SIGKILL with ``kill``), SIGKILL after ``timeout``; the exit code.

        ``kill`` is for a child whose work is done: a server's polite drain of
        10,000 sockets takes seconds and proves nothing there.
        """
        proc, code = self.proc, None
        if proc is not None:
            if proc.poll() is None:
                if kill:
                    kill_group(proc.pid)
                else:
                    proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    kill_group(proc.pid)
                    proc.wait()
            code = proc.returncode
            signals.unregister_child(proc.pid)
            if self._drain is not None:
                self._drain.join(timeout=2)
            if proc.stdout is not None:
                proc.stdout.close()
        if self._log is not None:
            self._log.close()
        self.proc, self._log, self._drain = None, None, None
        return code

    def __enter__(self) -> Self:
        """Started (and ready) unless it already was."""
        if self.proc is None:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
