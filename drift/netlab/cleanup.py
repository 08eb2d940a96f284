"""Nothing left behind: remove a lab, and the leftovers of labs whose process was killed.

Everything a lab creates lives inside namespaces named ``drift-<pid>-...``
(links, addresses, nft tables, qdiscs die with their namespace) plus processes
forked into its internet namespace (coturn, the embedded server, workers) and
a state folder ``/run/drift-netlab/<pid>-<lab>``. A run that was SIGKILLed
cannot clean up, so every new lab first sweeps: namespaces and folders whose
owner pid no longer exists are removed, and the processes still inside those
namespaces (found by namespace inode under ``/proc``) are killed. A live
owner's lab is never touched — two runs may share a machine.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
from pathlib import Path
from typing import Final

from drift.netlab import namespaces as ns

STATE_ROOT: Final = Path("/run/drift-netlab")
_STATE = re.compile(r"(?P<pid>\d+)-\d+")


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _pids_by_namespace() -> dict[int, list[int]]:
    """Every process's network namespace inode -> its pids (one pass over /proc)."""
    found: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        with contextlib.suppress(OSError):
            found.setdefault(os.stat(f"/proc/{entry}/ns/net").st_ino, []).append(int(entry))
    return found


def processes_in(names: list[str]) -> list[int]:
    """Pids of the processes whose network namespace is one of the named ones."""
    inodes: set[int] = set()
    for name in names:
        with contextlib.suppress(OSError):
            inodes.add(os.stat(ns.ns_path(name)).st_ino)
    if not inodes:
        return []
    return [pid for inode, pids in _pids_by_namespace().items() if inode in inodes for pid in pids]


def remove_namespaces(names: list[str]) -> None:
    """Kill what still runs inside them (SIGKILL: their owner is gone or done), then unbind."""
    for pid in processes_in(names):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    for name in names:
        ns.remove(name)


def sweep_leftovers() -> list[str]:
    """Remove the namespaces and state folders of dead owners; the names removed."""
    dead = [
        name
        for name in ns.list_drift_namespaces()
        if (pid := ns.owner_pid(name)) is not None and not alive(pid)
    ]
    remove_namespaces(dead)
    with contextlib.suppress(FileNotFoundError):
        for folder in STATE_ROOT.iterdir():
            match = _STATE.fullmatch(folder.name)
            if match and not alive(int(match["pid"])):
                _kill_pidfile(folder / "coturn.pid")
                shutil.rmtree(folder, ignore_errors=True)
                dead.append(str(folder))
    return dead


def _kill_pidfile(path: Path) -> None:
    """A coturn of a dead lab whose namespace is already gone (killed mid-teardown)."""
    try:
        pid = int(path.read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError):
        return
    if cmdline.split(b"\0", 1)[0].endswith(b"turnserver"):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
