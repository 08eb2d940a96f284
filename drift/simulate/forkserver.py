"""Where the peers' processes come from, started before anything else of a run.

Workers (``--procs`` > 1) are forked from multiprocessing's ``forkserver``: a
clean process that imported aiortc once, so no inherited event loop or
sockets and no import per worker. :func:`prestart` begins those imports as
early as the command can (before its own heavy imports and while the
embedded server starts), because the peers cannot start before they finish.
This module imports nothing heavy itself, for the same reason.
"""

from __future__ import annotations

import importlib
import multiprocessing
import multiprocessing.context
import multiprocessing.forkserver
import threading
from typing import Final

#: What every worker needs; the fork server imports it once, each fork inherits it.
PRELOAD: Final = ["drift.simulate.peer_processes", "drift.simulate.peer", "drift.aio"]


#: the one-process import thread was started (a run may call prestart twice)
_importing = False


def worker_context() -> multiprocessing.context.ForkServerContext:
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(PRELOAD)
    return ctx


def prestart(procs: int) -> None:
    """Begin the peers' imports now, so that they overlap the command's own start-up.

    With ``procs`` > 1, start the fork server: workers are forked from it, not
    spawned (a spawned worker would pay for importing aiortc itself, after the
    run has started), and this process never imports aiortc at all. With one
    process, import the peer modules in a thread while this one goes on with
    its imports and waits for the embedded server to print its URL.
    """
    global _importing
    if procs > 1:
        worker_context()
        multiprocessing.forkserver.ensure_running()
    elif not _importing:
        _importing = True
        threading.Thread(target=_import_peers, name="drift-preload", daemon=True).start()


def _import_peers() -> None:
    for name in PRELOAD:
        importlib.import_module(name)
