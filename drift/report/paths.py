"""Where run output goes: one fresh folder per run under ``reports/``.

The folder name starts with a UTC timestamp so that ``ls`` sorts runs by time and
runs from machines in different time zones compare; the suffix ``-2``, ``-3``... keeps
two runs started in the same second (a CI matrix, a test) from sharing a folder.
"""

from __future__ import annotations

import os
import re
from datetime import UTC, datetime
from pathlib import Path

__all__ = ["reports_root", "run_dir"]

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def reports_root() -> Path:
    """``$DRIFT_REPORTS_DIR`` if set (and not empty), else ``reports/`` in the current directory.

    Returned absolute, so a path printed at the end of a run still works after a ``cd``.
    """
    configured = os.environ.get("DRIFT_REPORTS_DIR", "")
    root = Path(configured).expanduser() if configured else Path("reports")
    return root.absolute()


def run_dir(kind: str, root: Path | None = None, now: datetime | None = None) -> Path:
    """Create and return ``<root>/<YYYYmmdd-HHMMSS>-<kind>/`` (UTC), never an existing one.

    ``kind`` is reduced to ``[A-Za-z0-9._-]`` (a scenario name with spaces or slashes
    must not escape ``root``). A naive ``now`` is taken as UTC. Creation uses
    ``mkdir`` without ``exist_ok``, so concurrent processes cannot claim the same folder.
    """
    safe_kind = _UNSAFE.sub("-", kind).strip("-.")
    if not safe_kind:
        raise ValueError(f"run kind {kind!r} has no usable characters")
    if now is None:
        now = datetime.now(UTC)
    elif now.tzinfo is None:
        now = now.replace(tzinfo=UTC)
    base = f"{now.astimezone(UTC):%Y%m%d-%H%M%S}-{safe_kind}"
    parent = reports_root() if root is None else root
    parent.mkdir(parents=True, exist_ok=True)
    n = 1
    while True:
        candidate = parent / (base if n == 1 else f"{base}-{n}")
        try:
            candidate.mkdir()
        except FileExistsError:
            n += 1
            continue
        return candidate
