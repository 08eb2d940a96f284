"""Find ``static/``, ``scenarios/`` and ``loadtest/`` from a checkout or an installed wheel."""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def data_dir(name: str) -> Path:
    """The wheel ships these under ``drift/_data``; a checkout has them at the repo root."""
    for candidate in (_PACKAGE / "_data" / name, _PACKAGE.parent / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"drift data folder {name!r} is missing from this installation")
