"""Named network namespaces, and moving one thread in and out of them.

Python 3.11 has no ``os.setns``; libc's ``setns`` and ``unshare`` through
ctypes switch the *calling thread* only. A socket (netlink, UDP, TCP) keeps the
namespace it was opened in, which is what lets one thread configure hundreds
of namespaces, and one event loop hold peers of many homes.

Every namespace of a lab is named ``drift-<pid>-<role>`` (``pid`` the owning
process), bind-mounted under ``/run/netns`` like ``ip netns add`` does, so
``ip netns list`` shows them and a later run can remove those of a process
that no longer exists. Names are built and parsed here only.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
from collections.abc import Iterator
from typing import Final

from pyroute2 import netns as _pyroute2_netns

CLONE_NEWNET: Final = 0x40000000
NETNS_DIR: Final = "/run/netns"
PREFIX: Final = "drift-"
_NAME = re.compile(r"drift-(?P<pid>\d+)-(?P<role>[a-z0-9-]+)")

_libc = ctypes.CDLL(None, use_errno=True)


def ns_name(pid: int, role: str) -> str:
    return f"{PREFIX}{pid}-{role}"


def owner_pid(name: str) -> int | None:
    """The pid a lab namespace name carries; None for a name that is not drift's."""
    match = _NAME.fullmatch(name)
    return int(match["pid"]) if match else None


def ns_path(name: str) -> str:
    return os.path.join(NETNS_DIR, name)


def list_drift_namespaces() -> list[str]:
    try:
        names = os.listdir(NETNS_DIR)
    except FileNotFoundError:
        return []
    return sorted(n for n in names if owner_pid(n) is not None)


def current_fd() -> int:
    """An fd of this thread's namespace (``/proc/self`` would be the main thread's)."""
    return os.open("/proc/thread-self/ns/net", os.O_RDONLY)


def setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


def open_ns(name: str) -> int:
    return os.open(ns_path(name), os.O_RDONLY)


@contextlib.contextmanager
def inside(fd: int) -> Iterator[None]:
    """Run the block with this thread in namespace ``fd``; always switch back."""
    back = current_fd()
    try:
        setns(fd)
        yield
    finally:
        setns(back)
        os.close(back)


def create(name: str) -> int:
    """A new, empty namespace bound to ``/run/netns/NAME`` (as ``ip netns add``); its fd.

    The thread unshares into the new namespace, binds it to the name, and
    switches back; the process and its other threads never leave theirs.
    """
    back = current_fd()
    try:
        if _libc.unshare(CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"unshare(CLONE_NEWNET): {os.strerror(err)}")
        try:
            _pyroute2_netns.attach(name, "thread-self")
            return current_fd()
        finally:
            setns(back)
    finally:
        os.close(back)


def remove(name: str) -> None:
    """Unbind the name; the kernel frees the namespace (and its links) once unused."""
    with contextlib.suppress(FileNotFoundError):
        _pyroute2_netns.remove(name)
