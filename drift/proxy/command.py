"""``drift proxy``: run the fault proxy in front of a server until interrupted."""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

import click

from drift.aio import run
from drift.client.urls import BadURL, ws_url
from drift.errors import ConfigError
from drift.proxy.faults import EXPECTED_KIND, WireFault
from drift.proxy.server import FaultProxy


@click.command()
@click.option(
    "--upstream",
    required=True,
    envvar="DRIFT_PROXY_UPSTREAM",
    show_envvar=True,
    help="The server to proxy to (ws://HOST:PORT/ws or http://HOST:PORT).",
)
@click.option(
    "--fault",
    type=click.Choice([f.value for f in WireFault]),
    default=WireFault.NONE.value,
    show_default=True,
    help="The lie to tell on the wire: "
    + "; ".join(f"{f.value} (simulate: {k})" for f, k in EXPECTED_KIND.items()),
)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=0,
    show_default=True,
    help="Port to listen on; 0 picks a free one (the URL is printed).",
)
@click.option(
    "--delay",
    type=click.FloatRange(0),
    default=1.0,
    show_default=True,
    help="Seconds after matched for false-partner-left, and matched's hold-back for delay-matched.",
)
@click.option(
    "--max-connections",
    type=click.IntRange(1),
    default=1000,
    show_default=True,
    help="Client connections proxied at once (more get HTTP 503).",
)
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help='Print the ready line as one JSON object {"event": "ready", "url": ...} on stdout.',
)
def proxy(**options: Any) -> None:
    """Proxy a drift server and inject one wire fault: check a client against a lying server."""
    try:
        upstream = ws_url(options["upstream"])
    except BadURL as exc:
        raise ConfigError(f"--upstream: {exc}") from None
    fp = FaultProxy(
        upstream,
        WireFault(options["fault"]),
        host=options["host"],
        port=options["port"],
        delay=options["delay"],
        max_connections=options["max_connections"],
    )

    async def serve() -> None:
        try:
            url = await fp.start()
        except OSError as exc:
            raise ConfigError(
                f"cannot listen on {options['host']}:{options['port']}: {exc.strerror}"
            ) from None
        if options["as_json"]:
            ready = {"event": "ready", "url": url, "upstream": upstream, "fault": fp.fault.value}
            click.echo(json.dumps(ready))
        else:
            click.echo(f"drift proxy: {url} -> {upstream} (fault: {fp.fault.value})")
        sys.stdout.flush()
        try:
            await asyncio.Event().wait()
        finally:
            await fp.stop()

    run(serve())
