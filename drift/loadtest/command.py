"""``drift loadtest SCENARIO``: server + locust + sampler -> a report folder and a verdict.

Order of a run: validate the scenario (exit 2 on a bad file), start the
reference server in its own process (or check that ``--url`` answers, exit 3
if not), start the sampler, run locust headless as subprocesses, wait for
``/stats`` to fall back to zero, stop everything, write the report, and exit 1
if a threshold failed.
"""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import click
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from drift.cli import progress_option, set_summary
from drift.client import urls
from drift.errors import CheckFailed, ConfigError, DriftError, TargetUnreachable
from drift.exitcodes import ExitCode
from drift.harness import signals
from drift.harness.child import Child
from drift.harness.signals import Interrupted
from drift.loadtest import report
from drift.loadtest.remote import DEFAULT_MASTER_PORT, worker_command, write_wrapper
from drift.loadtest.runner import (
    CSV_PREFIX,
    HTML_NAME,
    REMOTE_WAIT_S,
    SAMPLES_NAME,
    LocustPlan,
    LocustRun,
)
from drift.loadtest.sampler import Sampler, ServerSample, fetch_stats
from drift.loadtest.scenario import Scenario, load_scenario, resolve
from drift.loadtest.server import ServerProcess
from drift.report.incomplete import write_incomplete
from drift.report.paths import run_dir

PER_IP_NOTE = (
    "per-IP connection cap off (--max-connections-per-ip 0): every locust user connects "
    "from 127.0.0.1; the per-connection rate limit stays on"
)


def http_base(url: str) -> str:
    """``--url`` -> ``http://h:p`` (where /stats lives), or a usage error."""
    try:
        return urls.http_base(url)
    except urls.BadURL as exc:
        raise ConfigError(f"--url: {exc}") from None


def check_reachable(base: str, timeout: float = 3.0) -> None:
    parts = urlsplit(base)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        with socket.create_connection((parts.hostname, port), timeout=timeout):
            pass
    except OSError as exc:
        raise TargetUnreachable(f"cannot reach {base}: {exc.strerror or exc}") from None


def wait_stats_zero(base: str, timeout: float, interval: float = 0.25) -> dict[str, Any]:
    """Poll ``/stats`` until connections, waiting and rooms are all 0, or ``timeout``."""
    start = time.monotonic()
    last: dict[str, Any] | None = None
    while True:
        last = fetch_stats(base)
        zero = last is not None and all(
            last.get(k) == 0 for k in ("connections", "waiting", "rooms")
        )
        waited = time.monotonic() - start
        if zero or waited >= timeout:
            return {"zero": zero, "waited_s": round(waited, 2), "last": last}
        time.sleep(interval)


@contextlib.contextmanager
def _progress(console: Console, enabled: bool) -> Iterator[Progress | None]:
    if not enabled:
        yield None
        return
    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[status]}"),
        console=console,
        transient=False,
    )
    with progress:
        yield progress


def _status(sample: ServerSample | None) -> str:
    if sample is None:
        return ""
    parts = []
    for key in ("connections", "rooms", "waiting", "matches_total"):
        value = sample.stat(key)
        if value is not None:
            parts.append(f"{key.removesuffix('_total')} {value:.0f}")
    if sample.rss_bytes:
        parts.append(f"RSS {sample.rss_bytes / report.MIB:.0f} MiB")
    if sample.cpu_percent is not None:
        parts.append(f"CPU {sample.cpu_percent:.0f}%")
    return " · ".join(parts)


@click.command()
@click.argument("scenario", metavar="SCENARIO", required=False)
@click.option(
    "--url",
    default=None,
    help="Test this server (http(s):// or ws(s)://) instead of starting the reference server.",
)
@click.option(
    "--workers",
    type=click.IntRange(0, 64),
    default=0,
    show_default=True,
    help="locust worker processes under a local master (0 = one locust process).",
)
@click.option(
    "--master",
    is_flag=True,
    help="Run the locust master here and wait for --expect-workers workers that join from "
    "other machines (drift loadtest --worker); the report, thresholds and server sampling "
    "come out here.",
)
@click.option(
    "--expect-workers",
    type=click.IntRange(1, 1000),
    default=None,
    help=f"With --master: workers to wait for (at most {REMOTE_WAIT_S:g} s) before the load "
    "starts.",
)
@click.option(
    "--master-bind-host",
    default="127.0.0.1",
    show_default=True,
    help="With --master: the address workers connect to (the server drift starts listens "
    "there too, so that they reach it).",
)
@click.option(
    "--worker",
    is_flag=True,
    help="Join the master of a drift loadtest --master run as one locust worker; no "
    "SCENARIO (it comes from the master).",
)
@click.option(
    "--master-host",
    default="127.0.0.1",
    show_default=True,
    help="With --worker: the master's address.",
)
@click.option(
    "--master-port",
    type=click.IntRange(1, 65535),
    default=DEFAULT_MASTER_PORT,
    show_default=True,
    help="The master's port for workers: --master listens on it, --worker connects to it.",
)
@click.option(
    "--users", type=click.IntRange(1), default=None, help="Override the scenario's users."
)
@click.option(
    "--spawn-rate",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Override users started per second.",
)
@click.option(
    "--duration",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Override seconds of load.",
)
@click.option(
    "--server-arg",
    "server_args",
    multiple=True,
    metavar="FLAG",
    help="Extra flag for the started server, e.g. --server-arg=--rate-limit=50 (repeatable).",
)
@click.option(
    "--report-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Folder for the run folder [default: $DRIFT_REPORTS_DIR or ./reports].",
)
@click.option(
    "--sample-interval",
    type=click.FloatRange(min=0.1),
    default=1.0,
    show_default=True,
    help="Seconds between samples of server RSS and /stats.",
)
@progress_option("Live progress bar with the server's figures.")
def loadtest(
    scenario: str | None,
    url: str | None,
    workers: int,
    master: bool,
    expect_workers: int | None,
    master_bind_host: str,
    worker: bool,
    master_host: str,
    master_port: int,
    users: int | None,
    spawn_rate: float | None,
    duration: float | None,
    server_args: tuple[str, ...],
    report_dir: Path | None,
    sample_interval: float,
    progress: bool,
) -> None:
    """Run a locust SCENARIO (a name from scenarios/ or a .toml path) and report.

    Writes reports/<timestamp>-loadtest-<scenario>/ (locust CSV and HTML,
    summary.json, report.html, junit.xml). Exit 1 when a threshold fails, 3 when the
    target cannot be reached, 130/143 on SIGINT/SIGTERM (partial report marked
    interrupted); every run that starts leaves a complete folder.

    Load from many machines: ``drift loadtest SCENARIO --master --expect-workers N``
    here, ``drift loadtest --worker --master-host HOST`` on each other machine.
    """
    signals.raise_on_signals()
    if worker:
        if scenario is not None or master or expect_workers is not None:
            raise ConfigError("--worker takes no SCENARIO, --master or --expect-workers")
        _run_worker(master_host, master_port)
        return
    if scenario is None:
        raise ConfigError("missing SCENARIO: a name from scenarios/ or a .toml path")
    if master != (expect_workers is not None):
        raise ConfigError("--master and --expect-workers N go together")
    if master and workers:
        raise ConfigError("--master waits for remote workers; --workers starts local ones")
    if master and url is None and master_bind_host in WILDCARDS:
        raise ConfigError(
            f"--master-bind-host {master_bind_host}: the server drift starts needs an "
            "address workers can reach; give one, or --url of a server they reach"
        )
    path = resolve(scenario)
    # The locustfile reads the file itself; the overrides reach it as locust's
    # --users/--spawn-rate/--run-time (a scenario's [[stages]] are not scaled).
    spec = load_scenario(str(path)).with_overrides(
        users=users, spawn_rate=spawn_rate, duration_s=duration
    )
    if url is not None and server_args:
        raise ConfigError("--server-arg only applies to the server drift starts, not to --url")
    base = http_base(url) if url is not None else None
    console = Console(stderr=True)
    out = run_dir(f"loadtest-{spec.name}", root=report_dir)
    distribution = Distribution(
        workers=expect_workers or workers,
        remote=master,
        bind_host=master_bind_host,
        port=master_port if master else 0,
    )
    started = time.monotonic()
    facts = {"scenario": spec.name, "scenario_path": str(path), "url": url, "workers": workers}
    try:
        if base is not None:
            check_reachable(base)
        summary = _run(
            spec,
            path,
            url,
            base,
            distribution,
            server_args,
            sample_interval,
            out,
            console,
            progress,
        )
    except TargetUnreachable as exc:
        write_incomplete(
            out,
            kind="loadtest",
            verdict="unreachable",
            exit_code=int(ExitCode.UNREACHABLE),
            reason=str(exc),
            wall_s=time.monotonic() - started,
            facts=facts,
        )
        raise TargetUnreachable(f"{exc} (report: {out})") from None
    except Interrupted as exc:
        samples = out / SAMPLES_NAME
        counted = (
            {"request samples recorded": sum(1 for _ in samples.open()) - 1}
            if samples.is_file()
            else {}
        )
        write_incomplete(
            out,
            kind="loadtest",
            verdict="interrupted",
            exit_code=exc.exit_code,
            reason=f"interrupted by {exc.signal_name} after {time.monotonic() - started:.1f} s: "
            "locust and the server were stopped; no threshold was judged",
            wall_s=time.monotonic() - started,
            facts=facts,
            progress=counted,
        )
        signals.exit_interrupted(exc.signum, f"partial report: {out}")
    _print(console, summary, out)
    set_summary({**summary, "report_dir": str(out)})
    failed = [c for c in summary["thresholds"] if not c["passed"]]
    if failed:
        names = ", ".join(f"{c['name']} ({c['actual']} vs {c['limit']})" for c in failed)
        raise CheckFailed(
            f"{len(failed)} threshold(s) failed: {names}; report: {out / 'report.html'}"
        )


#: bind addresses that name no address a worker could connect to
WILDCARDS = ("0.0.0.0", "::", "*", "")


@dataclass(frozen=True)
class Distribution:
    """Where the locust workers run: none, local processes, or remote machines joining."""

    workers: int = 0
    remote: bool = False
    bind_host: str = "127.0.0.1"
    port: int = 0


def _run_worker(master_host: str, master_port: int) -> None:
    """One locust worker for a remote ``--master``, until the master ends the run."""
    child = Child(
        worker_command(master_host, master_port),
        name="locust worker",
        env={"PYTHONUNBUFFERED": "1"},
        inherit_stderr=True,
    )
    try:
        child.spawn()
        child.drain()
        code = child.wait()
    except Interrupted as exc:
        child.stop(timeout=3.0)
        signals.exit_interrupted(exc.signum)
    finally:
        child.stop(timeout=3.0)
    if code != 0:
        raise DriftError(f"the locust worker exited with code {code}")


def _run(
    spec: Scenario,
    scenario_path: Path,
    url: str | None,
    base: str | None,
    distribution: Distribution,
    server_args: tuple[str, ...],
    sample_interval: float,
    out: Path,
    console: Console,
    show_progress: bool,
) -> dict[str, Any]:
    started_at = time.time()
    server: ServerProcess | None = None
    notes: list[str] = []
    if base is None:
        # a --master's remote workers must reach the server: it listens where they connect
        host = distribution.bind_host if distribution.remote else "127.0.0.1"
        server = ServerProcess([*spec.server.args, *server_args], out / "server.log", host=host)
        base = server.start()
        notes.append(PER_IP_NOTE)
        if spec.server.args or server_args:
            notes.append(f"server flags: {' '.join([*spec.server.args, *server_args])}")
    elif spec.server.args:
        notes.append(f"scenario server flags not applied to --url: {' '.join(spec.server.args)}")
    try:
        # locust gets --url as given (its WebSocket path included); /stats lives at base.
        plan = LocustPlan(
            spec,
            scenario_path,
            url or base,
            out,
            distribution.workers,
            master_port=distribution.port,
            remote=distribution.remote,
            master_bind_host=distribution.bind_host,
            locust_file=write_wrapper(out, scenario_path.read_text(), spec.name)
            if distribution.remote
            else None,
        )
        run = LocustRun(plan)
        sampler = Sampler(base, server.pid if server else None, run.pids, sample_interval)
        sampler.start()
        try:
            run.start()
            load_started_at = time.time()
            code = _watch(run, sampler, spec, console, show_progress)
            load_ended_at = time.time()
            run.wait_workers()
        finally:
            run.stop()
        stats_after = wait_stats_zero(base, spec.stats_zero_timeout_s)
        sampler.take()  # the "end" memory figure: after the users have gone
        sampler.stop()
    finally:
        if server is not None:
            server.stop()
    if code not in (0, None) and not (out / f"{CSV_PREFIX}_stats.csv").is_file():
        raise DriftError(f"locust failed (exit {code}); see {out / 'locust.log'}")
    facts = report.RunFacts(
        scenario=spec,
        scenario_path=str(scenario_path),
        url=url or base,
        started_server=server is not None,
        server_command=server.command if server else [],
        workers=distribution.workers,
        started_at=started_at,
        load_started_at=load_started_at,
        load_ended_at=load_ended_at,
        finished_at=time.time(),
        locust_exit_code=code,
        stats_after=stats_after,
        notes=notes,
    )
    analysis = report.Analysis(
        facts,
        report.read_samples(out / SAMPLES_NAME),
        sampler.samples,
        report.read_user_history(out / f"{CSV_PREFIX}_stats_history.csv"),
        report.read_locust_stats(out / f"{CSV_PREFIX}_stats.csv"),
    )
    files = {
        "locust_html": HTML_NAME,
        "locust_stats": f"{CSV_PREFIX}_stats.csv",
        "locust_failures": f"{CSV_PREFIX}_failures.csv",
        "locust_history": f"{CSV_PREFIX}_stats_history.csv",
        "samples": SAMPLES_NAME,
        "locust_log": "locust.log",
    }
    if server is not None:
        files["server_log"] = "server.log"
    return report.write_outputs(analysis, out, files)


def _watch(
    run: LocustRun, sampler: Sampler, spec: Scenario, console: Console, show: bool
) -> int | None:
    """Wait for locust to finish (with a hard deadline), showing live server figures."""
    # Start-up (workers connecting) and shutdown get generous slack beyond the run time.
    deadline = time.monotonic() + spec.duration_s + 60 + 10 * run.plan.workers
    if run.plan.remote:
        deadline += REMOTE_WAIT_S
    start = time.monotonic()
    with _progress(console, show) as bar:
        task = (
            bar.add_task(f"loadtest {spec.name}", total=spec.duration_s, status="starting")
            if bar
            else None
        )
        while (code := run.poll()) is None:
            if time.monotonic() > deadline:
                raise DriftError("locust did not finish in time; see locust.log")
            if bar is not None and task is not None:
                bar.update(
                    task,
                    completed=min(time.monotonic() - start, spec.duration_s),
                    status=_status(sampler.latest),
                )
            time.sleep(0.25)
        if bar is not None and task is not None:
            bar.update(task, completed=spec.duration_s, status=_status(sampler.latest))
    return code


def _print(console: Console, summary: dict[str, Any], out: Path) -> None:
    table = Table(title=f"drift loadtest {summary['scenario']['name']}", title_justify="left")
    for col in ("type", "count", "failures", "p50 ms", "p99 ms", "max ms"):
        table.add_column(col, justify="left" if col == "type" else "right")
    for kind, row in summary["requests"].items():
        table.add_row(
            kind,
            str(row["count"]),
            str(row["failures"]),
            f"{row['p50']:.1f}",
            f"{row['p99']:.1f}",
            f"{row['max']:.1f}",
        )
    console.print(table)
    for check in summary["thresholds"]:
        mark = "[green]pass[/green]" if check["passed"] else "[red]FAIL[/red]"
        console.print(f"  {mark} {check['name']}: {check['actual']} (limit {check['limit']})")
    verdict = "[green]PASS[/green]" if summary["passed"] else "[red]FAIL[/red]"
    console.print(f"{verdict}  report: {out / 'report.html'}", soft_wrap=True)


__all__ = ["loadtest"]
