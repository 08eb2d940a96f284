"""The environment of a child process."""

from __future__ import annotations

import os
from collections.abc import Mapping


def child_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """This environment without ``DRIFT_*`` settings (they would change the child), plus ``extra``.

    The child's settings are then exactly its flags and ``extra``: a
    ``DRIFT_RATE_LIMIT`` exported in the caller's shell cannot silently change a
    server under test.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("DRIFT_")}
    env.update(extra or {})
    return env
