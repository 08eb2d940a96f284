"""JUnit XML for CI: each check of a run becomes a test case GitHub, GitLab and Jenkins show.

Written with ``xml.etree`` so every value is escaped; characters that XML 1.0 cannot
carry at all (NUL and other control characters, which do turn up in captured output)
are replaced, because one of them makes the whole file unreadable to the CI server.
"""

from __future__ import annotations

import math
import re
import socket
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

__all__ = ["Case", "write_junit"]

_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
_MESSAGE_MAX = 500


@dataclass(frozen=True)
class Case:
    """One check. ``failure`` is the failure text (its first line becomes the message).

    ``error`` is for a check that could not run at all (the target was unreachable,
    the run was interrupted): CI shows it apart from a check that ran and failed.
    """

    name: str
    classname: str
    time_s: float = 0.0
    failure: str | None = None
    failure_type: str | None = None
    skipped: str | None = None
    system_out: str | None = None
    error: str | None = None
    error_type: str | None = None

    def __post_init__(self) -> None:
        if self.failure is not None and self.skipped is not None:
            raise ValueError(f"case {self.name!r} cannot both fail and be skipped")
        if self.error is not None and (self.failure is not None or self.skipped is not None):
            raise ValueError(f"case {self.name!r} cannot both be an error and fail or be skipped")


def _text(value: object) -> str:
    return _NOT_XML.sub("\ufffd", str(value))


def _seconds(t: float) -> str:
    return f"{t:.3f}" if math.isfinite(t) and t > 0 else "0.000"


def _message(text: str) -> str:
    first = text.strip().splitlines()[0] if text.strip() else ""
    return _text(first if len(first) <= _MESSAGE_MAX else first[: _MESSAGE_MAX - 1] + "…")


def write_junit(
    path: Path,
    suite: str,
    cases: Sequence[Case],
    properties: Mapping[str, object] | None = None,
    *,
    timestamp: datetime | None = None,
    wall_s: float | None = None,
) -> Path:
    """Write ``cases`` as one ``<testsuite>`` inside ``<testsuites>``; return ``path``.

    ``timestamp`` (default: now, UTC) is the suite's start time shown by Jenkins.
    ``wall_s`` is the suite's time: the run's wall time. Cases of one run overlap
    (every pair runs at once), so their sum would be far longer than the run; it
    is only the fallback when no wall time is known.
    """
    failures = sum(1 for c in cases if c.failure is not None)
    errors = sum(1 for c in cases if c.error is not None)
    skipped = sum(1 for c in cases if c.skipped is not None)
    if wall_s is None:
        wall_s = math.fsum(c.time_s for c in cases if math.isfinite(c.time_s))
    total_time = _seconds(wall_s)
    counts = {
        "tests": str(len(cases)),
        "failures": str(failures),
        "errors": str(errors),
        "skipped": str(skipped),
        "time": total_time,
    }
    when = timestamp or datetime.now(UTC)
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)

    root = ET.Element("testsuites", {"name": _text(suite), **counts})
    ts = ET.SubElement(
        root,
        "testsuite",
        {
            "name": _text(suite),
            **counts,
            "timestamp": when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S"),
            "hostname": _text(socket.gethostname()),
        },
    )
    if properties:
        props = ET.SubElement(ts, "properties")
        for key, value in properties.items():
            ET.SubElement(props, "property", {"name": _text(key), "value": _text(value)})
    for case in cases:
        tc = ET.SubElement(
            ts,
            "testcase",
            {
                "name": _text(case.name),
                "classname": _text(case.classname),
                "time": _seconds(case.time_s),
            },
        )
        if case.failure is not None:
            failure = ET.SubElement(
                tc,
                "failure",
                {"message": _message(case.failure), "type": _text(case.failure_type or "failure")},
            )
            failure.text = _text(case.failure)
        if case.error is not None:
            error = ET.SubElement(
                tc,
                "error",
                {"message": _message(case.error), "type": _text(case.error_type or "error")},
            )
            error.text = _text(case.error)
        if case.skipped is not None:
            ET.SubElement(tc, "skipped", {"message": _message(case.skipped)})
        if case.system_out:
            ET.SubElement(tc, "system-out").text = _text(case.system_out)

    ET.indent(root)
    path.parent.mkdir(parents=True, exist_ok=True)
    ET.ElementTree(root).write(path, encoding="utf-8", xml_declaration=True)
    return path
