"""Process exit codes, one place for all subcommands (documented in the README)."""

from __future__ import annotations

import enum


class ExitCode(enum.IntEnum):
    OK = 0
    #: the run completed and a check or threshold failed
    CHECK_FAILED = 1
    #: bad flag, environment variable or scenario file
    USAGE = 2
    #: the target server could not be reached
    UNREACHABLE = 3
    #: ``drift serve --workers``: a worker kept dying, so the server gave up
    WORKERS_FAILING = 4
    #: interrupted (SIGINT, Ctrl-C); a partial report marked interrupted is written
    INTERRUPTED = 130
    #: stopped by SIGTERM (a CI cancel, ``docker stop``); as for SIGINT
    TERMINATED = 143
