"""``drift fuzz``: the fuzzer as a command, against ``--url`` or an embedded server.

With ``--url`` only the wire is judged (a remote log is out of reach: the
summary says so). Without it, drift starts its own servers on loopback — one
with the rate limit off for the mutation run, one with the default limit for
the bursts — and also fails the run on any ERROR record or traceback they log.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import secrets
import socket
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from drift.cli import progress_option, set_summary
from drift.client.urls import ws_url
from drift.errors import CheckFailed, ConfigError, TargetUnreachable
from drift.fuzz.attack_command import run_attacks
from drift.fuzz.attacks import ATTACKS, AttackConfig
from drift.fuzz.mutate import KINDS
from drift.fuzz.runner import FuzzConfig, FuzzReport, run_fuzz, stats_url
from drift.harness.signals import interruptible

#: Loggers whose ERROR records (or tracebacks) fail an embedded run.
WATCHED_LOGGERS = ("drift", "aiohttp", "asyncio")


class LogWatch(logging.Handler):
    """Collects ERROR records and tracebacks from the embedded server's loggers."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno >= logging.ERROR or record.exc_info:
            self.records.append(record)

    def __enter__(self) -> LogWatch:
        self._levels: dict[str, int] = {}
        for name in WATCHED_LOGGERS:
            logger = logging.getLogger(name)
            logger.addHandler(self)
            if logger.getEffectiveLevel() > logging.WARNING:
                self._levels[name] = logger.level
                logger.setLevel(logging.WARNING)
        return self

    def __exit__(self, *exc: object) -> None:
        for name in WATCHED_LOGGERS:
            logger = logging.getLogger(name)
            logger.removeHandler(self)
            if name in self._levels:
                logger.setLevel(self._levels[name])


def is_loopback_url(url: str) -> bool:
    """True if every address the URL's host resolves to is a loopback address."""
    host = urlsplit(url).hostname
    if not host:
        return False
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:
        return False
    return bool(infos) and all(
        ipaddress.ip_address(str(info[4][0]).split("%")[0]).is_loopback for info in infos
    )


@click.command()
@click.option(
    "--url",
    default=None,
    help="WebSocket URL of the server (ws://host:port/ws). "
    "Without it, drift fuzzes servers it starts itself on loopback.",
)
@click.option("--seed", type=int, default=None, help="Replay a run (printed at the start).")
@click.option(
    "--connections",
    type=click.IntRange(1, 1000),
    default=8,
    show_default=True,
    help="Fuzz connections at once.",
)
@click.option(
    "--frames",
    type=click.IntRange(1),
    default=10_000,
    show_default=True,
    help="Fuzz frames to try in total.",
)
@click.option(
    "--duration",
    type=click.FloatRange(0.1),
    default=60.0,
    show_default=True,
    help="Stop after this many seconds even if frames are left.",
)
@click.option(
    "--window",
    type=click.IntRange(1, 256),
    default=8,
    show_default=True,
    help="Frames in flight per connection.",
)
@click.option(
    "--bursts",
    type=click.IntRange(0, 100),
    default=2,
    show_default=True,
    help="Connections that send a burst without waiting (rate limiting, close 1008).",
)
@click.option(
    "--burst-frames",
    type=click.IntRange(1, 100_000),
    default=200,
    show_default=True,
    help="Frames each burst connection sends.",
)
@click.option(
    "--honest-interval",
    type=click.FloatRange(0.0),
    default=None,
    help="Seconds between the honest pair's relay rounds (4 frames each); default "
    "0.25 (under the default rate limit), 0.02 for an embedded server without one.",
)
@click.option(
    "--honest-pairs",
    type=click.IntRange(1, 100),
    default=1,
    show_default=True,
    help="Honest pairs relaying at once (several catch relays that cross rooms).",
)
@click.option(
    "--reply-timeout",
    type=click.FloatRange(0.1),
    default=5.0,
    show_default=True,
    help="Seconds to wait for the server's answer to a frame before counting it lost.",
)
@click.option(
    "--kind",
    "kinds",
    multiple=True,
    type=click.Choice(sorted(KINDS)),
    help="Only these kinds of frame (repeatable); default all.",
)
@click.option(
    "--skip-kind",
    "skip_kinds",
    multiple=True,
    type=click.Choice(sorted(KINDS)),
    help="Leave these kinds out (repeatable).",
)
@click.option(
    "--allow-remote",
    is_flag=True,
    help="Allow a target that is not on loopback (only a server you run).",
)
@click.option(
    "--attack",
    "attacks",
    multiple=True,
    type=click.Choice([*ATTACKS, "all"]),
    help="Instead of fuzzing, run this attack (repeatable; 'all') while an honest pair "
    "measures its latency and /healthz; fails when the pair suffers or the server does "
    "not end the abuse.",
)
@click.option(
    "--attack-duration",
    type=click.FloatRange(0.5, 600),
    default=3.0,
    show_default=True,
    help="Seconds each attack runs (longer than the server's --upgrade-timeout for "
    "idle-sockets and slowloris).",
)
@click.option(
    "--attack-sockets",
    type=click.IntRange(1, 5000),
    default=100,
    show_default=True,
    help="Sockets opened by idle-sockets and slowloris.",
)
@click.option(
    "--max-ratio",
    type=click.FloatRange(1.0),
    default=5.0,
    show_default=True,
    help="An honest median under attack may be this many times its baseline (plus 20 ms).",
)
@click.option(
    "--honest-source",
    default="127.0.0.2",
    show_default=True,
    help="Local address of the honest pair, so per-address caps keep it apart from the "
    "attacker; '' for the default.",
)
@click.option(
    "--report",
    "report_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Also write the result as JSON here.",
)
@progress_option()
def fuzz(
    url: str | None,
    seed: int | None,
    connections: int,
    frames: int,
    duration: float,
    window: int,
    bursts: int,
    burst_frames: int,
    honest_interval: float | None,
    honest_pairs: int,
    reply_timeout: float,
    kinds: tuple[str, ...],
    skip_kinds: tuple[str, ...],
    allow_remote: bool,
    attacks: tuple[str, ...],
    attack_duration: float,
    attack_sockets: int,
    max_ratio: float,
    honest_source: str,
    report_path: Path | None,
    progress: bool,
) -> None:
    """Send mutated and random frames from many connections while an honest pair talks.

    With --attack, run abusive connections instead (see drift/fuzz/attacks.py).
    """
    console = Console(highlight=False)
    if url is not None:
        if urlsplit(url).scheme not in ("ws", "wss"):
            raise ConfigError(f"--url must be a ws:// or wss:// URL, not {url!r}")
        if not allow_remote and not is_loopback_url(url):
            raise ConfigError(
                f"{url} is not a loopback address; fuzz only servers you run "
                "(pass --allow-remote to confirm)"
            )
    if attacks:
        names = ATTACKS if "all" in attacks else tuple(dict.fromkeys(attacks))
        base = AttackConfig(
            url=url or "",
            attack="",
            duration=attack_duration,
            sockets=attack_sockets,
            max_ratio=max_ratio,
            honest_source=honest_source or None,
            reply_timeout=min(reply_timeout, 2.0),
        )
        run_attacks(console, base, names, report_path)
        return
    seed = seed if seed is not None else secrets.randbits(32)
    cfg = FuzzConfig(
        url=url or "",
        seed=seed,
        connections=connections,
        frames=frames,
        duration=duration,
        window=window,
        bursts=bursts,
        burst_frames=burst_frames,
        honest_interval=0.25 if honest_interval is None else honest_interval,
        honest_pairs=honest_pairs,
        reply_timeout=reply_timeout,
        kinds=(frozenset(kinds) or frozenset(KINDS)) - frozenset(skip_kinds),
    )
    if not cfg.kinds:
        raise ConfigError("--skip-kind left no kind of frame to send")
    console.print(f"drift fuzz: seed {seed} (replay with --seed {seed})")
    # SIGINT/SIGTERM: the in-process servers shut down as the loop unwinds; exit 130/143
    with LogWatch() as watch, interruptible():
        report = asyncio.run(
            _run(cfg, console, embedded=url is None, interval=honest_interval, progress=progress)
        )
    log_errors = [_describe(r) for r in watch.records] if url is None else []
    for line in log_errors:
        report.problem(f"server log: {line}")
    _summary(console, report, embedded=url is None)
    set_summary(report.to_json())
    if report_path is not None:
        report_path.write_text(json.dumps(report.to_json(), indent=2) + "\n")
    if not report.ok:
        raise CheckFailed(f"fuzz found {report.problem_count} problem(s) (seed {seed})")


async def _run(
    cfg: FuzzConfig, console: Console, *, embedded: bool, interval: float | None, progress: bool
) -> FuzzReport:
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=False,
        disable=not progress,
    ) as bar:
        task = bar.add_task("fuzz frames", total=cfg.frames)

        def advance(done: int) -> None:
            bar.update(task, completed=done)

        if not embedded:
            await _reachable(cfg)
            return await run_fuzz(cfg, advance)
        return await _run_embedded(cfg, advance, interval)


async def _reachable(cfg: FuzzConfig) -> None:
    import aiohttp

    try:
        async with (
            aiohttp.ClientSession() as http,
            http.get(stats_url(cfg.url), timeout=aiohttp.ClientTimeout(total=cfg.reply_timeout)),
        ):
            pass
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        raise TargetUnreachable(f"cannot reach {cfg.url}: {exc}") from exc


async def _run_embedded(cfg: FuzzConfig, advance: Any, interval: float | None) -> FuzzReport:
    """Mutations against a server without a rate limit, then bursts against one with it."""
    from drift.serve.config import ServerConfig
    from drift.serve.server import Server

    quiet = ServerConfig(port=0, rate_limit=0, max_connections_per_ip=0, log_level="warning")
    limited = ServerConfig(port=0, max_connections_per_ip=0, log_level="warning")
    report: FuzzReport | None = None
    for config, part in ((quiet, "mutations"), (limited, "bursts")):
        server = Server(config)
        await server.start()
        try:
            url = ws_url(server.url)
            if part == "mutations":
                run = replace(
                    cfg, url=url, bursts=0, honest_interval=0.02 if interval is None else interval
                )
                report = await run_fuzz(run, advance)
            else:
                run = replace(
                    cfg,
                    url=url,
                    connections=0,
                    frames=0,
                    honest_interval=0.25 if interval is None else interval,
                )
                assert report is not None
                if cfg.bursts:
                    report.merge(await run_fuzz(run))
        finally:
            await server.shutdown()
    assert report is not None
    report.url = "embedded (127.0.0.1)"
    return report


def _describe(record: logging.LogRecord) -> str:
    text = f"{record.levelname} {record.name}: {record.getMessage()}"
    if record.exc_info and record.exc_info[1] is not None:
        text += f" ({type(record.exc_info[1]).__name__}: {record.exc_info[1]})"
    return text[:300]


def _summary(console: Console, report: FuzzReport, *, embedded: bool) -> None:
    table = Table(title=f"drift fuzz — {report.url}", show_header=False)
    table.add_column("what")
    table.add_column("value")
    table.add_row("seed", str(report.seed))
    if embedded:
        # Runs that open many connections from one address say so (docs/operations.md).
        table.add_row(
            "servers",
            "127.0.0.1, per-IP cap off; rate limit off (mutations), default (bursts)",
        )
    table.add_row(
        "frames tried",
        f"{report.frames_tried:,} ({report.wire_frames:,} wire frames, "
        f"{report.bytes_sent / 1e6:.1f} MB)",
    )
    table.add_row("burst frames", f"{report.burst_frames:,}")
    table.add_row("connections opened", f"{report.connections:,}")
    table.add_row("error answers", _counts(report.errors + report.burst_errors))
    table.add_row("closes", _counts(report.closes + report.burst_closes))
    table.add_row(
        "honest relays",
        f"{report.honest_relays:,} (all arrived in order)"
        if report.honest_relays and report.ok
        else f"{report.honest_relays:,}",
    )
    after = report.stats_after
    table.add_row(
        "/stats after",
        ", ".join(
            f"{k}={after.get(k)}" for k in ("connections", "waiting", "rooms", "matches_total")
        ),
    )
    table.add_row(
        "server log",
        "no ERROR and no traceback"
        if embedded and report.ok
        else "watched"
        if embedded
        else "not visible from here (check it yourself)",
    )
    table.add_row("elapsed", f"{report.elapsed_s:.1f} s")
    table.add_row(
        "verdict",
        "[green]PASS[/]" if report.ok else f"[red]FAIL[/] ({report.problem_count} problems)",
    )
    console.print(table)
    for text in report.problems[:20]:
        console.print(f"  - {text}", markup=False, soft_wrap=True)
    if report.problem_count > 20:
        console.print(f"  ... and {report.problem_count - 20} more (see --report)")


def _counts(counter: Any) -> str:
    return ", ".join(f"{k}: {v:,}" for k, v in sorted(counter.items(), key=str)) or "-"
