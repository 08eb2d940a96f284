"""Network profiles: TOML files naming groups of peers and the network each group has.

A profile is read once, validated strictly (an unknown key is a typo that would
otherwise silently emulate something else), and every error names the file and
the key: ``networks/x.toml: group[2].nat: unknown NAT type 'full-cone' ...``.
The shipped profiles live in the top-level ``networks/`` folder (packaged like
``scenarios/``); ``--network NAME`` finds ``NAME.toml`` there, anything with a
``/`` or a ``.toml`` suffix is a path. docs/networks.md is the reference.
"""

from __future__ import annotations

import math
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from drift.errors import ConfigError
from drift.resources import data_dir

NATS: Final = ("none", "cone", "symmetric")
FIREWALLS: Final = ("open", "udp-blocked")
USES: Final = ("relay", "direct")
_GROUP_KEYS: Final = frozenset(
    {"name", "share", "nat", "firewall", "loss", "rate", "delay", "jitter", "description"}
)
_TOP_KEYS: Final = frozenset({"description", "group", "expect"})
_EXPECT_KEYS: Final = frozenset({"group", "pairing", "min_verified", "use"})
_RATE = re.compile(r"(?P<n>\d+(?:\.\d+)?)\s*(?P<unit>[kmg]?)(?:bit|bps)?", re.IGNORECASE)
_TIME = re.compile(r"(?P<n>\d+(?:\.\d+)?)\s*(?P<unit>ms|s|us)", re.IGNORECASE)
_NAME = re.compile(r"[a-z][a-z0-9_-]{0,31}")
#: shares are decimals in a text file: "sums to 1" allows their rounding
_SHARE_TOLERANCE: Final = 1e-6


class ProfileError(ConfigError):
    """A profile file is invalid; the message names the file and the key."""


@dataclass(frozen=True, slots=True)
class Group:
    name: str
    share: float
    nat: str = "cone"
    firewall: str = "open"
    #: percent of packets dropped in each direction on the home's router
    loss: float = 0.0
    #: bits per second each way (0: no cap)
    rate_bps: int = 0
    #: one-way delay and its jitter, in milliseconds (needs netem)
    delay_ms: float = 0.0
    jitter_ms: float = 0.0


@dataclass(frozen=True, slots=True)
class Expectation:
    """A minimum verified share, and optionally the path every verified pair must take.

    ``groups`` has one name (every pair with a peer of that group) or two (that
    pairing, in either order).
    """

    groups: tuple[str, ...]
    min_verified: float = 1.0
    #: "relay": every verified pair used a relay candidate; "direct": none did
    use: str | None = None

    @property
    def label(self) -> str:
        return "↔".join(self.groups) if len(self.groups) == 2 else self.groups[0]


@dataclass(frozen=True, slots=True)
class Profile:
    name: str
    source: str
    description: str
    groups: tuple[Group, ...]
    expectations: tuple[Expectation, ...]

    def group(self, name: str) -> Group:
        return next(g for g in self.groups if g.name == name)

    @property
    def needs_netem(self) -> bool:
        return any(g.delay_ms > 0 or g.jitter_ms > 0 for g in self.groups)

    def assign(self, peers: int) -> list[Group]:
        """The group of every peer index: largest remainders, then interleaved.

        Counts follow the shares as closely as whole peers allow; peers of the
        groups are interleaved so that arrival order does not pair one group
        with itself.
        """
        raw = [g.share * peers for g in self.groups]
        counts = [math.floor(r) for r in raw]
        by_remainder = sorted(range(len(raw)), key=lambda i: (counts[i] - raw[i], i))
        for i in by_remainder[: peers - sum(counts)]:
            counts[i] += 1
        # Bresenham-like interleave: each slot takes the group furthest behind its share.
        placed = [0] * len(counts)
        order: list[Group] = []
        for slot in range(peers):
            best = max(
                (i for i in range(len(counts)) if placed[i] < counts[i]),
                key=lambda i: (counts[i] * (slot + 1) / peers - placed[i], -i),
            )
            placed[best] += 1
            order.append(self.groups[best])
        return order


def shipped_dir() -> Path:
    return data_dir("networks")


def shipped_names() -> list[str]:
    try:
        return sorted(p.stem for p in shipped_dir().glob("*.toml"))
    except FileNotFoundError:
        return []


def resolve(spec: str) -> Path:
    """A shipped profile's file, or the path given."""
    if "/" in spec or spec.endswith(".toml"):
        path = Path(spec)
        if not path.is_file():
            raise ProfileError(f"--network: no profile file {spec}")
        return path
    path = shipped_dir() / f"{spec}.toml"
    if not path.is_file():
        raise ProfileError(
            f"--network: no shipped profile {spec!r} (shipped: {', '.join(shipped_names())}; "
            "or give a path to a .toml file)"
        )
    return path


def load_profile(spec: str) -> Profile:
    path = resolve(spec)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ProfileError(f"{path}: not a readable TOML file: {exc}") from None
    return parse_profile(data, source=str(path), name=path.stem)


def parse_profile(data: dict[str, Any], *, source: str, name: str) -> Profile:
    def fail(key: str, why: str) -> ProfileError:
        return ProfileError(f"{source}: {key}: {why}")

    for key in data:
        if key not in _TOP_KEYS:
            raise fail(key, f"unknown key (allowed: {', '.join(sorted(_TOP_KEYS))})")
    raw_groups = data.get("group")
    if not isinstance(raw_groups, list) or not raw_groups:
        raise fail("group", "a profile needs at least one [[group]] table")
    groups = tuple(_group(g, f"group[{i}]", fail) for i, g in enumerate(raw_groups))
    names = [g.name for g in groups]
    for i, n in enumerate(names):
        if names.index(n) != i:
            raise fail(f"group[{i}].name", f"{n!r} is used by two groups")
    total = sum(g.share for g in groups)
    if abs(total - 1.0) > _SHARE_TOLERANCE:
        raise fail("group.share", f"the shares sum to {total:g}, not 1")
    raw_expect = data.get("expect", [])
    if not isinstance(raw_expect, list):
        raise fail("expect", "must be a list of [[expect]] tables")
    expectations = tuple(
        _expect(e, f"expect[{i}]", set(names), fail) for i, e in enumerate(raw_expect)
    )
    description = data.get("description", "")
    if not isinstance(description, str):
        raise fail("description", "must be a string")
    return Profile(name, source, description, groups, expectations)


def _group(raw: object, where: str, fail: Any) -> Group:
    if not isinstance(raw, dict):
        raise fail(where, "must be a table")
    for key in raw:
        if key not in _GROUP_KEYS:
            raise fail(f"{where}.{key}", f"unknown key (allowed: {', '.join(sorted(_GROUP_KEYS))})")
    name = raw.get("name")
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise fail(f"{where}.name", "a lower-case name of letters, digits, - or _ is required")
    share = raw.get("share")
    if isinstance(share, bool) or not isinstance(share, int | float) or not 0 < share <= 1:
        raise fail(f"{where}.share", f"must be a number in (0, 1], got {share!r}")
    nat = raw.get("nat", "cone")
    if nat not in NATS:
        raise fail(f"{where}.nat", f"unknown NAT type {nat!r} (known: {', '.join(NATS)})")
    firewall = raw.get("firewall", "open")
    if firewall not in FIREWALLS:
        raise fail(
            f"{where}.firewall", f"unknown firewall {firewall!r} (known: {', '.join(FIREWALLS)})"
        )
    loss = raw.get("loss", 0)
    if isinstance(loss, bool) or not isinstance(loss, int | float) or not 0 <= loss < 100:
        raise fail(f"{where}.loss", f"must be a percentage in [0, 100), got {loss!r}")
    return Group(
        name=name,
        share=float(share),
        nat=nat,
        firewall=firewall,
        loss=float(loss),
        rate_bps=_rate(raw.get("rate"), f"{where}.rate", fail),
        delay_ms=_millis(raw.get("delay"), f"{where}.delay", fail),
        jitter_ms=_millis(raw.get("jitter"), f"{where}.jitter", fail),
    )


def _rate(value: object, key: str, fail: Any) -> int:
    if value is None:
        return 0
    match = _RATE.fullmatch(value.strip()) if isinstance(value, str) else None
    if match is None:
        raise fail(key, f"a rate like '2mbit' or '512kbit' is required, got {value!r}")
    scale = {"": 1, "k": 1_000, "m": 1_000_000, "g": 1_000_000_000}[match["unit"].lower()]
    bps = int(float(match["n"]) * scale)
    if bps < 8_000:
        raise fail(key, f"{value!r} is below 8kbit, too slow for ICE to finish")
    return bps


def _millis(value: object, key: str, fail: Any) -> float:
    if value is None:
        return 0.0
    match = _TIME.fullmatch(value.strip()) if isinstance(value, str) else None
    if match is None:
        raise fail(key, f"a duration like '40ms' is required, got {value!r}")
    scale = {"ms": 1.0, "s": 1000.0, "us": 0.001}[match["unit"].lower()]
    return float(match["n"]) * scale


def _expect(raw: object, where: str, names: set[str], fail: Any) -> Expectation:
    if not isinstance(raw, dict):
        raise fail(where, "must be a table")
    for key in raw:
        if key not in _EXPECT_KEYS:
            raise fail(
                f"{where}.{key}", f"unknown key (allowed: {', '.join(sorted(_EXPECT_KEYS))})"
            )
    if ("group" in raw) == ("pairing" in raw):
        raise fail(where, "needs exactly one of group = 'name' or pairing = ['a', 'b']")
    if "group" in raw:
        groups: tuple[str, ...] = (raw["group"],)
        key = f"{where}.group"
    else:
        pairing = raw["pairing"]
        key = f"{where}.pairing"
        if not isinstance(pairing, list) or len(pairing) != 2:
            raise fail(key, "must be a list of two group names")
        groups = tuple(pairing)
    for g in groups:
        if g not in names:
            raise fail(key, f"no group named {g!r} (groups: {', '.join(sorted(names))})")
    floor = raw.get("min_verified", 1.0)
    if isinstance(floor, bool) or not isinstance(floor, int | float) or not 0 <= floor <= 1:
        raise fail(f"{where}.min_verified", f"must be a share in [0, 1], got {floor!r}")
    use = raw.get("use")
    if use is not None and use not in USES:
        raise fail(f"{where}.use", f"must be one of {', '.join(USES)}, got {use!r}")
    return Expectation(groups, float(floor), use)
