"""Scenario files: declarative TOML, validated on load, shared by the CLI and the locustfile.

This module is imported inside locust's gevent processes too, so it must not
import asyncio (or anything that does): only tomllib, msgspec and drift's
error and resource modules. The keys are documented in ``docs/loadtest.md``;
a bad file is refused with one line naming the file and the key.
"""

from __future__ import annotations

import math
import re
import tomllib
from pathlib import Path
from typing import Final

import msgspec

from drift.core.protocol import ErrorCode
from drift.errors import ConfigError
from drift.resources import data_dir

__all__ = ["Scenario", "Stage", "Thresholds", "available", "load_scenario", "resolve"]

#: Failure codes the locust users report besides the protocol's error codes.
CLIENT_CODES: Final = frozenset(
    {"timeout", "connection-lost", "refused", "bad-frame", "partner-silent"}
)


class Stage(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """From ``at_s`` seconds into the run, hold ``users`` users, spawned at ``spawn_rate``/s."""

    at_s: float
    users: int
    spawn_rate: float


class Server(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    #: Extra ``drift serve`` flags when ``drift loadtest`` starts the server itself.
    args: list[str] = []


class Thresholds(msgspec.Struct, forbid_unknown_fields=True, frozen=True, omit_defaults=True):
    """Pass/fail limits; an absent key is not checked."""

    connect_p99_ms: float | None = None
    queue_p50_ms: float | None = None
    queue_p99_ms: float | None = None
    relay_p99_ms: float | None = None
    #: failed / all requests of the honest users (expected error codes excluded)
    failure_ratio: float | None = None
    #: server RSS after the users left minus RSS at warm-up, in MiB
    rss_growth_mb: float | None = None
    #: /stats must show 0 connections, waiting and rooms after the users stop
    stats_zero_after: bool | None = None
    #: at least this many successful matches (guards against a run that did nothing)
    min_matches: int | None = None


class Scenario(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    users: int
    spawn_rate: float
    duration_s: float
    description: str = ""
    stages: list[Stage] = []
    hold_s: float = 2.0
    think_s: float = 0.5
    pacing_s: float = 0.0
    next_share: float = 0.4
    leave_share: float = 0.3
    disconnect_share: float = 0.3
    sdp_bytes: int = 2048
    candidates: int = 4
    connect_timeout_s: float = 10.0
    relay_timeout_s: float = 10.0
    match_timeout_s: float = 90.0
    abuse_share: float = 0.0
    expected_errors: list[str] = []
    warmup_s: float | None = None
    stats_zero_timeout_s: float = 10.0
    server: Server = Server()
    thresholds: Thresholds = Thresholds()
    #: Not a TOML key: set from the file name.
    name: str = ""

    def __post_init__(self) -> None:
        # msgspec reports a ValueError raised here with the struct's path; the
        # key is named in the message so the one-line error says which one.
        _at_least("users", self.users, 1)
        _positive("spawn_rate", self.spawn_rate)
        _positive("duration_s", self.duration_s)
        for key in ("hold_s", "think_s", "pacing_s", "stats_zero_timeout_s"):
            _at_least(key, getattr(self, key), 0)
        for key in ("connect_timeout_s", "relay_timeout_s", "match_timeout_s"):
            _positive(key, getattr(self, key))
        if self.think_s and self.pacing_s:
            raise ValueError("key 'pacing_s': set either think_s or pacing_s, not both")
        shares = (self.next_share, self.leave_share, self.disconnect_share)
        for key, share in zip(
            ("next_share", "leave_share", "disconnect_share"), shares, strict=True
        ):
            _between(key, share, 0, 1)
        if not math.isclose(sum(shares), 1.0, abs_tol=1e-6):
            raise ValueError(
                "key 'next_share': next_share + leave_share + disconnect_share must be 1, "
                f"got {sum(shares):g}"
            )
        _between("sdp_bytes", self.sdp_bytes, 64, 60_000)
        _between("candidates", self.candidates, 0, 50)
        _between("abuse_share", self.abuse_share, 0, 0.9)
        known = {c.value for c in ErrorCode} | CLIENT_CODES
        for code in self.expected_errors:
            if code not in known and not re.fullmatch(r"close-\d{4}", code):
                raise ValueError(f"key 'expected_errors': unknown error code {code!r}")
        if self.warmup_s is not None:
            _at_least("warmup_s", self.warmup_s, 0)
        last = -1.0
        for i, stage in enumerate(self.stages):
            _at_least(f"stages[{i}].users", stage.users, 0)
            _positive(f"stages[{i}].spawn_rate", stage.spawn_rate)
            if stage.at_s <= last:
                raise ValueError(f"key 'stages[{i}].at_s': stages must be in increasing at_s")
            last = stage.at_s
        t = self.thresholds
        if t.failure_ratio is not None:
            _between("thresholds.failure_ratio", t.failure_ratio, 0, 1)

    @property
    def peak_users(self) -> int:
        return max([self.users, *(s.users for s in self.stages)])

    @property
    def warmup_at_s(self) -> float:
        """When the memory baseline is taken: by default once every user has been spawned.

        Never later than half the run, so a run shortened with ``--duration`` still
        has a baseline to compare with.
        """
        wanted = self.warmup_s if self.warmup_s is not None else self.users / self.spawn_rate + 2
        return min(wanted, self.duration_s / 2)

    def with_overrides(
        self,
        *,
        users: int | None = None,
        spawn_rate: float | None = None,
        duration_s: float | None = None,
    ) -> Scenario:
        changes = {
            k: v
            for k, v in (("users", users), ("spawn_rate", spawn_rate), ("duration_s", duration_s))
            if v is not None
        }
        if not changes:
            return self
        try:
            return msgspec.structs.replace(self, **changes)
        except ValueError as exc:
            raise ConfigError(f"{self.name}: {exc}") from None

    def to_dict(self) -> dict[str, object]:
        out = msgspec.to_builtins(self)
        assert isinstance(out, dict)
        return out


def _at_least(key: str, value: float, low: float) -> None:
    if value < low:
        raise ValueError(f"key {key!r} must be >= {low:g}, got {value:g}")


def _positive(key: str, value: float) -> None:
    if not value > 0 or not math.isfinite(value):
        raise ValueError(f"key {key!r} must be > 0, got {value:g}")


def _between(key: str, value: float, low: float, high: float) -> None:
    if not low <= value <= high:
        raise ValueError(f"key {key!r} must be within {low:g}..{high:g}, got {value:g}")


def available() -> list[str]:
    """Names of the scenarios shipped in ``scenarios/``."""
    try:
        folder = data_dir("scenarios")
    except FileNotFoundError:
        return []
    return sorted(p.stem for p in folder.glob("*.toml"))


def resolve(name_or_path: str) -> Path:
    """A shipped scenario name (``smoke``) or a path to a ``.toml`` file."""
    candidate = Path(name_or_path)
    if candidate.suffix == ".toml" or "/" in name_or_path or candidate.is_file():
        if not candidate.is_file():
            raise ConfigError(f"{name_or_path}: scenario file not found")
        return candidate
    if name_or_path in available():
        return data_dir("scenarios") / f"{name_or_path}.toml"
    names = ", ".join(available()) or "none installed"
    raise ConfigError(f"unknown scenario {name_or_path!r} (shipped: {names}; or give a .toml path)")


_UNKNOWN = re.compile(r"Object contains unknown field `(?P<key>[^`]+)`")
_MISSING = re.compile(r"Object missing required field `(?P<key>[^`]+)`")
_TYPE = re.compile(r"Expected `(?P<want>[^`]+)`, got `(?P<got>[^`]+)`")
_AT = re.compile(r" - at `\$(?P<path>[^`]*)`$")


def _explain(message: str) -> str:
    """msgspec's validation message as "<problem> 'dotted.key'" (one line, the key named)."""
    at = _AT.search(message)
    path = at.group("path").lstrip(".") if at else ""
    body = message[: at.start()] if at else message

    def key(name: str) -> str:
        return f"{path}.{name}" if path else name

    if m := _UNKNOWN.match(body):
        return f"unknown key {key(m['key'])!r}"
    if m := _MISSING.match(body):
        return f"missing required key {key(m['key'])!r}"
    if m := _TYPE.match(body):
        return f"key {path!r} must be {m['want']}, got {m['got']}"
    if body.startswith("key "):  # our own __post_init__ messages already name the key
        return body
    return f"{body} (at {path!r})" if path else body


def parse(text: str, source: str, name: str) -> Scenario:
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: not valid TOML: {exc}") from None
    if "name" in raw:  # set from the file name, never from the file
        raise ConfigError(f"{source}: unknown key 'name'")
    raw["name"] = name
    try:
        return msgspec.convert(raw, Scenario, strict=True)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"{source}: {_explain(str(exc))}") from None


def load_scenario(name_or_path: str) -> Scenario:
    """Load and validate a scenario; every problem is a one-line :class:`ConfigError`."""
    path = resolve(name_or_path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read scenario: {exc}") from None
    return parse(text, str(path), path.stem)
