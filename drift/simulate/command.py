"""``drift simulate``: prove that peers really get matched and really connect.

Flags -> :class:`Settings` -> :func:`simulate_run` (target, peers, verdict,
reports) -> exit code. The console is injected so output is testable.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
from rich.console import Console, Group
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table

from drift.client.signaling import ProtocolViolation, SignalingClient
from drift.errors import ConfigError, DriftError, TargetUnreachable
from drift.exitcodes import ExitCode
from drift.report.paths import run_dir
from drift.simulate.embedded import SERVER_NOTE, EmbeddedServer
from drift.simulate.peer_processes import prestart, run_in_process, run_in_workers
from drift.simulate.report import print_summary, summarize_run, write_reports
from drift.simulate.runner import Coordinator, RunSpec, tune_gc
from drift.simulate.verify import classify
from drift.turn.probe import pick_turn_target


@dataclass(frozen=True)
class Settings:
    peers: int = 500
    urls: tuple[str, ...] = ()
    arrival_rate: float | None = None
    hold: float = 0.0
    next_fraction: float = 0.0
    timeout: float = 20.0
    trickle: bool = True
    media_fraction: float = 0.02
    procs: int = 1
    concurrency: int = 500
    min_success: float | None = None
    real_interfaces: bool = False
    server_faults: tuple[str, ...] = ()
    report_dir: Path | None = None
    live: bool = True
    seed: int = 0
    #: "all" or "relay" (only candidates relayed by the TURN server of welcome)
    ice_policy: str = "all"
    #: TURN for the embedded server's welcome (with --url the target hands out its own)
    turn_urls: tuple[str, ...] = ()
    turn_secret: str | None = dataclasses.field(default=None, repr=False)
    turn_ttl: float | None = None


@dataclass(slots=True)
class SimulateResult:
    exit_code: ExitCode
    summary: dict[str, Any]
    report_dir: Path | None


async def preflight(urls: tuple[str, ...], timeout: float = 10.0, ice_policy: str = "all") -> None:
    """One welcome from every target, or TargetUnreachable with one readable line.

    A relay-only run against a target whose welcome has no TURN server could
    only time out pair by pair, so it stops here with the reason instead.
    """
    for url in urls:
        try:
            client = await SignalingClient.connect(url, timeout=timeout)
        except ProtocolViolation as exc:
            raise TargetUnreachable(f"{url} does not speak the drift protocol: {exc}") from None
        except Exception as exc:
            reason = str(exc) or type(exc).__name__
            raise TargetUnreachable(f"cannot reach {url}: {reason}") from None
        servers = client.ice_servers
        await client.close()
        if ice_policy == "relay" and pick_turn_target(servers) is None:
            raise ConfigError(
                f"--ice-policy relay, but the welcome of {url} has no TURN server with "
                "credentials (run the server with --turn-url and --turn-secret)"
            )


class LiveView:
    """The rich live display: one line of counts per state, and a bar of peers done."""

    def __init__(self, console: Console, peers: int) -> None:
        self.console = console
        self.peers = peers
        self.live: Live | None = None
        self.started = time.monotonic()

    def __enter__(self) -> LiveView:
        if self.console.is_terminal or self.console.is_jupyter:
            self.live = Live(console=self.console, refresh_per_second=4, transient=False)
            self.live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.live is not None:
            self.live.__exit__(None, None, None)

    def update(self, coordinator: Coordinator) -> None:
        if self.live is None:
            return
        states, done, failed, totals = coordinator.totals()
        table = Table.grid(padding=(0, 2))
        for _ in range(8):
            table.add_column(justify="right")
        table.add_row(
            "connected", "waiting", "matched", "negotiating", "verified", "failed", "done", "s"
        )
        table.add_row(
            str(totals.get("connected", 0)),
            str(states.get("waiting", 0)),
            str(totals.get("matched", 0)),
            str(states.get("negotiating", 0)),
            f"[green]{totals.get('verified', 0)}[/]",
            f"[red]{failed}[/]" if failed else "0",
            f"{done}/{self.peers}",
            f"{time.monotonic() - self.started:.1f}",
        )
        bar = ProgressBar(total=self.peers, completed=done, width=60)
        self.live.update(Group(table, bar))


#: One process runs ~250 pairs in a couple of seconds on one core; below a few
#: hundred peers a second process costs more to start than it saves.
AUTO_PROCS_FROM = 200
AUTO_PROCS_MAX = 4


def auto_procs(peers: int) -> int:
    """The default --procs: every core for a large run (measured: docs/performance.md)."""
    if peers < AUTO_PROCS_FROM:
        return 1
    return max(1, min(os.cpu_count() or 1, AUTO_PROCS_MAX, peers // 100))


async def simulate_run(settings: Settings, console: Console) -> SimulateResult:
    """The whole run: target up, peers, verdict, reports. Raises TargetUnreachable."""
    if settings.procs > 1:
        prestart()
    server: EmbeddedServer | None = None
    folder = settings.report_dir or run_dir("simulate")
    try:
        if settings.urls:
            urls = settings.urls
            target: dict[str, Any] = {"urls": list(urls), "embedded": False, "note": ""}
        else:
            server = EmbeddedServer(
                peers=settings.peers,
                faults=settings.server_faults,
                log=folder / "server.log",
                turn_urls=settings.turn_urls,
                turn_secret=settings.turn_secret,
                turn_ttl=settings.turn_ttl,
            )
            urls = (await server.start(),)
            note = SERVER_NOTE
            if settings.server_faults:
                note += f"; FAULTS INJECTED: {', '.join(settings.server_faults)}"
            target = {"urls": list(urls), "embedded": True, "note": note}
        await preflight(urls, ice_policy=settings.ice_policy)
        spec = RunSpec(
            urls=urls,
            peers=settings.peers,
            arrival_rate=settings.arrival_rate,
            hold=settings.hold,
            next_fraction=settings.next_fraction,
            timeout=settings.timeout,
            trickle=settings.trickle,
            media_fraction=settings.media_fraction,
            concurrency=settings.concurrency,
            real_interfaces=settings.real_interfaces,
            seed=settings.seed,
            ice_policy=settings.ice_policy,
            t0=time.monotonic(),
        )
        started = time.monotonic()
        with LiveView(console if settings.live else Console(quiet=True), settings.peers) as view:
            if settings.procs > 1:
                merged = await run_in_workers(spec, settings.procs, view.update)
            else:
                merged = await run_in_process(spec, view.update)
        wall = time.monotonic() - started
        run_failures = list(merged.errors)
        server_rss: int | None = None
        if server is not None:
            left = await server.settled_connections()
            if left:
                run_failures.append(
                    f"server-leak: /stats still counts {left} connections after every peer left"
                )
            server_rss = server.peak_rss()
    finally:
        if server is not None:
            await server.stop()
    verdict = classify(
        merged.records,
        trickle=settings.trickle,
        run_failures=run_failures,
        ice_policy=settings.ice_policy,
    )
    passed = verdict.passed(settings.min_success)
    code = ExitCode.OK if passed else ExitCode.CHECK_FAILED
    options = dataclasses.asdict(settings)
    # the TURN secret never reaches a report file
    for key in ("urls", "report_dir", "live", "server_faults", "turn_secret"):
        options.pop(key)
    summary = summarize_run(
        verdict,
        settings=options,
        target={**target, "faults": list(settings.server_faults)},
        wall_s=wall,
        worker_rss=merged.worker_rss,
        server_rss=server_rss,
        passed=passed,
        exit_code=int(code),
    )
    print_summary(console, summary)
    write_reports(folder, summary, verdict)
    verdict_word = "[green]PASS[/]" if passed else "[red]FAIL[/]"
    console.print(f"{verdict_word}  report: {folder / 'report.html'}")
    return SimulateResult(code, summary, folder)


# ---------------------------------------------------------------------- click


def _env(name: str) -> dict[str, Any]:
    return {"envvar": f"DRIFT_SIMULATE_{name}", "show_envvar": True, "show_default": True}


@click.command()
@click.option(
    "--peers", type=click.IntRange(1), default=500, help="Synthetic peers.", **_env("PEERS")
)
@click.option(
    "--url",
    "urls",
    multiple=True,
    help="ws://host:port/ws of a server to check (repeatable: peers spread round-robin). "
    "Default: an embedded reference server on a free port.",
    envvar="DRIFT_SIMULATE_URLS",
    show_envvar=True,
)
@click.option(
    "--arrival-rate",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Peers per second (default: all at once).",
    **_env("ARRIVAL_RATE"),
)
@click.option(
    "--hold",
    type=click.FloatRange(0),
    default=0.0,
    help="Seconds a verified pair stays connected.",
    **_env("HOLD"),
)
@click.option(
    "--next-fraction",
    type=click.FloatRange(0, 1),
    default=0.0,
    help="Share of peers that press next once connected and must get a new verified partner.",
    **_env("NEXT_FRACTION"),
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=20.0,
    help="Seconds each pair has from matched to verified.",
    **_env("TIMEOUT"),
)
@click.option(
    "--trickle/--no-trickle",
    default=True,
    help="Send ICE candidates as ice-candidate frames (else they stay in the SDP).",
    **_env("TRICKLE"),
)
@click.option(
    "--media-fraction",
    type=click.FloatRange(0, 1),
    default=0.02,
    help="Share of pairs that also send identity video (at least one pair when > 0).",
    **_env("MEDIA_FRACTION"),
)
@click.option(
    "--procs",
    type=click.IntRange(1, 64),
    default=None,
    help="Worker processes to spread the peers over [default: one per core (at most "
    f"{AUTO_PROCS_MAX}) from {AUTO_PROCS_FROM} peers on, else 1].",
    **_env("PROCS"),
)
@click.option(
    "--concurrency",
    type=click.IntRange(2),
    default=500,
    help="Most peers in flight at once per process (the rest queue to start).",
    **_env("CONCURRENCY"),
)
@click.option(
    "--min-success",
    type=click.FloatRange(0, 1),
    default=None,
    help="Pass when this share of peers verified (default: every one).",
    **_env("MIN_SUCCESS"),
)
@click.option(
    "--real-interfaces",
    is_flag=True,
    default=False,
    help="Gather ICE candidates on the machine's real interfaces (default: 127.0.0.1 only).",
    **_env("REAL_INTERFACES"),
)
@click.option(
    "--report-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Write the reports here (default: reports/<timestamp>-simulate/).",
    envvar="DRIFT_SIMULATE_REPORT_DIR",
    show_envvar=True,
)
@click.option(
    "--no-live", is_flag=True, default=False, help="No live progress display.", **_env("NO_LIVE")
)
@click.option(
    "--seed", type=int, default=0, help="Seed of the --next-fraction draw.", **_env("SEED")
)
@click.option(
    "--ice-policy",
    type=click.Choice(["all", "relay"]),
    default="all",
    help="relay: peers may connect only through the TURN server of welcome "
    "(iceTransportPolicy relay); every pair must then use relay candidates.",
    **_env("ICE_POLICY"),
)
@click.option(
    "--turn-url",
    "turn_urls",
    multiple=True,
    help="TURN URL the embedded server hands out with time-limited credentials (repeatable).",
    envvar="DRIFT_SIMULATE_TURN_URLS",
    show_envvar=True,
)
@click.option(
    "--turn-secret",
    default=None,
    help="coturn's static-auth-secret, for the embedded server's TURN credentials "
    "(prefer the variable).",
    envvar="DRIFT_TURN_SECRET",
    show_envvar=True,
)
@click.option(
    "--turn-ttl",
    type=click.FloatRange(1),
    default=None,
    help="Seconds the embedded server's TURN credentials stay valid (default: drift serve's).",
    envvar="DRIFT_SIMULATE_TURN_TTL",
    show_envvar=True,
)
@click.option(
    "--server-fault",
    "server_faults",
    multiple=True,
    hidden=True,
    help="TESTING ONLY: start the embedded server with this --fault.",
)
def simulate(
    peers: int,
    urls: tuple[str, ...],
    arrival_rate: float | None,
    hold: float,
    next_fraction: float,
    timeout: float,
    trickle: bool,
    media_fraction: float,
    procs: int | None,
    concurrency: int,
    min_success: float | None,
    real_interfaces: bool,
    report_dir: Path | None,
    no_live: bool,
    seed: int,
    ice_policy: str,
    turn_urls: tuple[str, ...],
    turn_secret: str | None,
    turn_ttl: float | None,
    server_faults: tuple[str, ...],
) -> None:
    """Headless aiortc peers that prove matching and real WebRTC connections end to end.

    Exit codes: 0 every pair verified (or --min-success met), 1 a check failed,
    2 bad usage, 3 the target could not be reached.
    """
    for url in urls:
        if not url.startswith(("ws://", "wss://")):
            raise ConfigError(f"--url must be a ws:// or wss:// URL, got {url!r}")
    if urls and server_faults:
        raise ConfigError("--server-fault applies to the embedded server only (no --url)")
    if procs is None:
        procs = auto_procs(peers)
    if procs > peers:
        raise ConfigError(f"--procs {procs} is more than --peers {peers}")
    if urls and (turn_urls or turn_ttl is not None):
        raise ConfigError(
            "--turn-url/--turn-ttl configure the embedded server only; with --url the "
            "target's welcome carries its own TURN credentials"
        )
    if turn_urls and not turn_secret:
        raise ConfigError("--turn-url needs --turn-secret (or DRIFT_TURN_SECRET)")
    settings = Settings(
        peers=peers,
        urls=urls,
        arrival_rate=arrival_rate,
        hold=hold,
        next_fraction=next_fraction,
        timeout=timeout,
        trickle=trickle,
        media_fraction=media_fraction,
        procs=procs,
        concurrency=concurrency,
        min_success=min_success,
        real_interfaces=real_interfaces,
        server_faults=server_faults,
        report_dir=report_dir,
        live=not no_live,
        seed=seed,
        ice_policy=ice_policy,
        turn_urls=turn_urls,
        turn_secret=turn_secret if turn_urls else None,
        turn_ttl=turn_ttl,
    )
    from drift.cli import _run

    tune_gc()
    console = Console(stderr=False)
    try:
        result = _run(simulate_run(settings, console))
    except OSError as exc:
        # click would take an escaping EPIPE for a closed stdout and exit silently
        raise DriftError(f"simulate failed: {exc}") from exc
    assert isinstance(result, SimulateResult)
    with contextlib.suppress(Exception):
        sys.stdout.flush()
    sys.exit(int(result.exit_code))


def run_sync(settings: Settings, console: Console | None = None) -> SimulateResult:
    """Run a simulation from synchronous code (benchmarks): same path as the command."""
    return asyncio.run(simulate_run(settings, console or Console(quiet=True)))
