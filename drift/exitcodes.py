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
    #: interrupted by the user (SIGINT)
    INTERRUPTED = 130
