"""``drift turn-check``: does this TURN server accept drift's credentials and relay?

Makes one allocation per ``--url`` with a fresh credential, built exactly as
``drift serve`` builds the ones in ``welcome``
(:class:`drift.serve.turn_credentials.IceServerSource`),
then deletes it. One line per URL; exit 0 when every URL allocated, 1 when a
server refused (credentials, quota, ports), 3 when one could not be reached.
"""

from __future__ import annotations

import time
from typing import Any

import click

from drift.cli import set_summary
from drift.errors import CheckFailed, ConfigError, TargetUnreachable
from drift.serve.turn_credentials import IceServerSource
from drift.turn.probe import allocate_once
from drift.turn.targets import ProbeResult, TurnProblem, parse_turn_url, pick_turn_target


async def check_all(
    urls: tuple[str, ...], secret: str, ttl: float, peer_id: str, timeout: float
) -> list[ProbeResult]:
    """One allocation per URL, each with the credential drift serve would hand out."""
    results = []
    for url in urls:
        source = IceServerSource(turn_urls=(url,), turn_secret=secret, turn_ttl=ttl)
        target = pick_turn_target(source(peer_id, time.time()))
        assert target is not None  # every URL was validated before
        results.append(await allocate_once(target, timeout=timeout))
    return results


def result_json(result: ProbeResult) -> dict[str, Any]:
    """One server's outcome, for ``--json`` (monitoring scripts read it)."""
    return {
        "url": result.target.url,
        "ok": result.ok,
        "problem": result.problem.value if result.problem is not None else None,
        "detail": result.detail,
        "relayed": list(result.relayed) if result.relayed else None,
        "mapped": list(result.mapped) if result.mapped else None,
        "lifetime_s": result.lifetime,
        "elapsed_ms": round(result.elapsed_ms, 1),
    }


@click.command("turn-check")
@click.option(
    "--url",
    "urls",
    multiple=True,
    required=True,
    help="turn:host:port[?transport=udp] to check (repeatable).",
    envvar="DRIFT_TURN_URLS",
    show_envvar=True,
)
@click.option(
    "--secret",
    required=True,
    help="coturn's static-auth-secret, as given to drift serve (prefer the variable).",
    envvar="DRIFT_TURN_SECRET",
    show_envvar=True,
)
@click.option(
    "--ttl",
    type=click.FloatRange(1),
    default=600.0,
    show_default=True,
    help="Validity of the test credential, in seconds.",
)
@click.option(
    "--peer-id",
    default="drift-turn-check",
    show_default=True,
    help="Peer id in the credential's username (<expiry>:<peer id>).",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=5.0,
    show_default=True,
    help="Seconds to wait for the server.",
)
def turn_check(
    urls: tuple[str, ...], secret: str, ttl: float, peer_id: str, timeout: float
) -> None:
    """Allocate once on each TURN server with fresh drift credentials and say whether it works.

    Exit codes: 0 every server allocated a relay, 1 a server refused (credentials
    rejected, allocation refused), 2 bad usage, 3 a server could not be reached.
    """
    for url in urls:
        try:
            _, _, transport, secure = parse_turn_url(url)
        except ValueError as exc:
            raise ConfigError(f"--url {url!r}: {exc}") from None
        if transport != "udp" or secure:
            raise ConfigError(f"--url {url!r}: turn-check speaks TURN over UDP only")
    from drift import aio

    results = aio.run(check_all(urls, secret, ttl, peer_id, timeout))
    assert isinstance(results, list)
    set_summary({"ok": all(r.ok for r in results), "servers": [result_json(r) for r in results]})
    worst: TurnProblem | None = None
    failed: list[str] = []
    for res in results:
        if res.ok:
            click.echo(
                f"ok {res.target.url}: {res.detail}, lifetime {res.lifetime} s "
                f"({res.elapsed_ms:.1f} ms)"
            )
        else:
            failed.append(f"{res.target.url}: {res.problem}: {res.detail}")
            if worst is None or res.problem is TurnProblem.UNREACHABLE:
                worst = res.problem
    if not failed:
        return
    message = "; ".join(failed)
    if worst is TurnProblem.UNREACHABLE:
        raise TargetUnreachable(message)
    raise CheckFailed(message)
