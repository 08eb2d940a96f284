"""The one place that turns a server's address into its endpoints' URLs.

A server is named by its HTTP base (``http://host:port``, what ``drift serve``
prints) or by its WebSocket URL (``ws://host:port/ws``, what ``--url`` takes);
every tool converts between them here, so ``/ws`` and the scheme mapping are
written once. Pure string work: the locustfile (gevent) imports it too.
"""

from __future__ import annotations

from typing import Final
from urllib.parse import urlsplit, urlunsplit

#: The signaling endpoint's path on every drift server (docs/protocol.md).
WS_PATH: Final = "/ws"

_TO_WS: Final = {"http": "ws", "https": "wss"}
_TO_HTTP: Final = {"ws": "http", "wss": "https"}


class BadURL(ValueError):
    """Not an http(s):// or ws(s)://HOST[:PORT] URL."""


def _split(url: str) -> tuple[str, str, str, str]:
    parts = urlsplit(url)
    if parts.scheme not in (*_TO_WS, *_TO_HTTP) or not parts.hostname:
        raise BadURL(f"expected http(s):// or ws(s)://HOST[:PORT], got {url!r}")
    return parts.scheme, parts.netloc, parts.path, parts.query


def ws_url(url: str) -> str:
    """``http://h:p`` (or ``ws://h:p``, any path) -> ``ws://h:p/ws``; a ws path given is kept."""
    scheme, netloc, path, query = _split(url)
    if scheme in _TO_WS or path in ("", "/"):
        path, query = WS_PATH, ""
    return urlunsplit((_TO_WS.get(scheme, scheme), netloc, path, query, ""))


def http_base(url: str) -> str:
    """``ws://h:p/ws`` or ``http://h:p/...`` -> ``http://h:p`` (where /stats and /metrics live)."""
    scheme, netloc, _, _ = _split(url)
    return urlunsplit((_TO_HTTP.get(scheme, scheme), netloc, "", "", ""))


def endpoint(url: str, path: str) -> str:
    """The HTTP URL of ``path`` (``/stats``, ``/metrics``, ``/healthz``) on ``url``'s server."""
    return http_base(url) + path
