"""The run behind ``drift simulate``: target up, peers, verdict, reports.

:func:`simulate_run` is what the command runs (and what tests and benchmarks
call directly): it starts the embedded server unless the command already did
(:mod:`drift.simulate.command` starts it before importing this module, whose
imports of aiohttp, rich and the report take ~0.3 s), checks the targets,
runs the peers in this process or in workers, judges every pair and writes
the report folder.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console, Group
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table

from drift.client.signaling import ProtocolViolation, SignalingClient
from drift.errors import ConfigError, TargetUnreachable
from drift.exitcodes import ExitCode
from drift.harness import signals
from drift.report.incomplete import write_incomplete
from drift.report.paths import run_dir
from drift.simulate.call_reports import CallReportCheck
from drift.simulate.embedded import SERVER_NOTE, EmbeddedServer
from drift.simulate.forkserver import prestart
from drift.simulate.loopback import network_for
from drift.simulate.peer_processes import run_in_process, run_in_workers
from drift.simulate.report import print_summary, summarize_run, write_reports
from drift.simulate.runner import Coordinator, RunSpec
from drift.simulate.settings import Settings
from drift.simulate.verify import classify
from drift.turn.targets import pick_turn_target

if TYPE_CHECKING:  # the lab needs pyroute2, imported only by --network runs
    from drift.netlab.lab import NetworkLab

__all__ = [
    "Settings",
    "SimulateResult",
    "network_lab",
    "preflight",
    "run_sync",
    "simulate_run",
]


@dataclass(slots=True)
class SimulateResult:
    exit_code: ExitCode
    summary: dict[str, Any]
    report_dir: Path | None


#: seconds the preflight gives each target to answer with welcome
PREFLIGHT_TIMEOUT = 10.0


async def preflight(
    urls: tuple[str, ...], *, ice_policy: str, timeout: float = PREFLIGHT_TIMEOUT
) -> None:
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


class _Progress:
    """What the run has counted so far, for the partial report of an interrupted run."""

    def __init__(self, view: LiveView | None = None) -> None:
        self.coordinator: Coordinator | None = None
        self.view = view
        self.target: dict[str, Any] = {}

    def tick(self, coordinator: Coordinator) -> None:
        self.coordinator = coordinator
        if self.view is not None:
            self.view.update(coordinator)

    def counts(self) -> dict[str, int]:
        if self.coordinator is None:
            return {}
        states, done, failed, totals = self.coordinator.totals()
        return {
            "peers done": done,
            "peers failed": failed,
            **{f"peers {name} (so far)": n for name, n in sorted(totals.items())},
            **{f"peers {name} when stopped": n for name, n in sorted(states.items()) if n},
        }


async def simulate_run(
    settings: Settings,
    console: Console,
    lab: NetworkLab | None = None,
    *,
    server: EmbeddedServer | None = None,
) -> SimulateResult:
    """The whole run: target up, peers, verdict, reports. Raises TargetUnreachable.

    With ``lab`` (``--network``, opened by :func:`network_lab`) the embedded server
    serves STUN/TURN of the lab's coturn on the lab's internet, and every peer sits
    in its own home; the profile's expectations then decide the verdict.

    Every run that starts leaves a complete report folder: an unreachable target
    (exit 3) and a SIGINT/SIGTERM (exit 130/143, the peers and the embedded server
    stopped first) write one marked as such.

    ``server``: the embedded server, already spawned by the command (its log in
    the report folder); this run waits for it to be ready and stops it.
    """
    settings = settings.resolved()
    folder = settings.report_dir or run_dir("simulate")
    progress = _Progress()
    started = time.monotonic()
    task = asyncio.current_task()
    assert task is not None
    with signals.cancel_on_signals(asyncio.get_running_loop(), task):
        try:
            return await _simulate_run(settings, console, lab, folder, progress, server)
        except asyncio.CancelledError:
            signum = signals.received()
            if signum is None:
                raise
            task.uncancel()
            code = signals.exit_code_for(signum)
            name = signal.Signals(signum).name
            summary = write_incomplete(
                folder,
                kind="simulate",
                verdict="interrupted",
                exit_code=code,
                reason=f"interrupted by {name} after {time.monotonic() - started:.1f} s: "
                "the peers and the embedded server were stopped; peers still running "
                "were not judged",
                wall_s=time.monotonic() - started,
                facts={"settings": settings.report_options(), "target": progress.target},
                progress=progress.counts(),
            )
            console.print(f"[yellow]INTERRUPTED[/] ({name})  partial report: {folder}")
            return SimulateResult(ExitCode(code), summary, folder)
        except TargetUnreachable as exc:
            write_incomplete(
                folder,
                kind="simulate",
                verdict="unreachable",
                exit_code=int(ExitCode.UNREACHABLE),
                reason=str(exc),
                wall_s=time.monotonic() - started,
                facts={"settings": settings.report_options(), "target": progress.target},
            )
            raise TargetUnreachable(f"{exc} (report: {folder})") from None


async def _simulate_run(
    settings: Settings,
    console: Console,
    lab: NetworkLab | None,
    folder: Path,
    progress: _Progress,
    server: EmbeddedServer | None,
) -> SimulateResult:
    procs = settings.procs
    assert procs is not None
    prestart(procs)
    try:
        if settings.urls:
            urls = settings.urls
            target: dict[str, Any] = {"urls": list(urls), "embedded": False, "note": ""}
        else:
            if server is None:
                lab_options = lab_server_options(lab) if lab is not None else {}
                server = EmbeddedServer.for_run(settings, folder, **lab_options)
            urls = (await server.start(),)
            note = SERVER_NOTE
            if settings.server_faults:
                note += f"; FAULTS INJECTED: {', '.join(settings.server_faults)}"
            target = {"urls": list(urls), "embedded": True, "note": note}
        progress.target = target
        await preflight(urls, ice_policy=settings.ice_policy)
        calls_check = await CallReportCheck.start(urls)
        spec = RunSpec(
            settings=settings.for_peers(),
            urls=urls,
            t0=time.monotonic(),
            network=network_for(settings.real_interfaces) if lab is None else peer_network(lab),
        )
        started = time.monotonic()
        with LiveView(console if settings.live else Console(quiet=True), settings.peers) as view:
            progress.view = view
            if procs > 1:
                merged = await run_in_workers(spec, procs, progress.tick)
            else:
                merged = await run_in_process(spec, progress.tick)
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
        # after the settle: every peer's socket, so every report before it, is handled
        run_failures += await calls_check.finish(merged.records)
    finally:
        if server is not None:
            # An interrupted run has no time for the server's polite drain of peers
            # that are gone anyway: SIGTERM, then SIGKILL after a short wait.
            await server.stop(timeout=2.0 if signals.received() else 15.0)
    verdict = classify(
        merged.records,
        trickle=settings.trickle,
        run_failures=run_failures,
        ice_policy=settings.ice_policy,
        hold=settings.hold,
        timeout=settings.timeout,
    )
    passed = verdict.passed(settings.min_success)
    network: dict[str, Any] | None = None
    if lab is not None:
        network = lab_summary(lab, verdict, settings)
        passed = network["passed"] and not verdict.run_failures
    code = ExitCode.OK if passed else ExitCode.CHECK_FAILED
    options = settings.report_options()
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
    if network is not None:
        summary["network"] = network
    summary["call_reports"] = calls_check.outcome
    print_summary(console, summary)
    if calls_check.skipped:
        console.print(f"[yellow]{calls_check.outcome['note']}[/]")
    elif calls_check.outcome.get("checked") and not calls_check.outcome["mismatches"]:
        sent = calls_check.outcome["reports"]
        console.print(f"call reports: the server counted the {sent} the peers sent")
    if network is not None:
        from drift.netlab.report import print_network

        print_network(console, summary)
    write_reports(folder, summary, verdict)
    verdict_word = "[green]PASS[/]" if passed else "[red]FAIL[/]"
    hints = "".join(f"; {hint}" for hint in summary.get("hints", []))
    console.print(f"{verdict_word}  report: {folder / 'report.html'}{hints}")
    return SimulateResult(code, summary, folder)


def run_sync(settings: Settings, console: Console | None = None) -> SimulateResult:
    """Run a simulation from synchronous code (benchmarks): same path as the command."""
    with network_lab(settings) as lab:
        return asyncio.run(simulate_run(settings, console or Console(quiet=True), lab))


@contextlib.contextmanager
def network_lab(settings: Settings) -> Iterator[NetworkLab | None]:
    """The lab of a ``--network`` run around the whole run (its event loop included), or None."""
    if settings.network is None:
        yield None
        return
    from drift.netlab.session import load_profile, open_lab

    profile = load_profile(settings.network)
    with open_lab(profile, settings.peers, turn=not settings.no_turn) as lab:
        yield lab


def lab_server_options(lab: NetworkLab) -> dict[str, Any]:
    """The embedded server in the lab: on its internet address, with its STUN/TURN."""
    from drift.netlab.lab import SERVICE_IP

    assert lab.coturn is not None
    return {
        "host": SERVICE_IP,
        "stun_urls": lab.stun_urls,
        "turn_urls": lab.turn_urls,
        "turn_secret": lab.coturn.secret if lab.turn_urls else None,
    }


def peer_network(lab: NetworkLab) -> Any:
    from drift.netlab.session import peer_network as lab_peer_network

    return lab_peer_network(lab)


def lab_summary(lab: NetworkLab, verdict: Any, settings: Settings) -> dict[str, Any]:
    """Per group and pairing, with the loss the routers applied; decides the verdict."""
    from drift.netlab.report import network_summary
    from drift.netlab.session import turn_transports

    return network_summary(
        verdict,
        lab.seats,
        lab.profile,
        turn=bool(lab.turn_urls),
        turn_transport=turn_transports(lab),
        loss=lab.loss_counters(),
        min_success=settings.min_success,
    )
