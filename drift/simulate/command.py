"""``drift simulate``: prove that peers really get matched and really connect.

Flags -> :class:`~drift.simulate.settings.Settings` (whose defaults are the
flags' defaults) -> :func:`drift.simulate.run.simulate_run` (target, peers,
verdict, reports) -> exit code.

This module stays light on purpose: before it imports the run (aiohttp,
rich, the report), the command starts the embedded server's process and the
peers' fork server, so their start-up overlaps those imports instead of
following them (docs/performance.md, "Simulate").
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from rich.console import Console

from drift.cli import progress_option, set_summary
from drift.errors import ConfigError, DriftError
from drift.harness import signals
from drift.harness.signals import Interrupted
from drift.report.incomplete import write_incomplete
from drift.report.paths import run_dir
from drift.simulate.embedded import NO_CA_BUNDLE, EmbeddedServer
from drift.simulate.forkserver import prestart
from drift.simulate.settings import AUTO_PROCS_FROM, AUTO_PROCS_MAX, Settings, auto_procs

if TYPE_CHECKING:
    from drift.simulate.run import SimulateResult

__all__ = ["Settings", "auto_procs", "settings_from_flags", "simulate"]


# ---------------------------------------------------------------------- click
# Every default below is read from Settings, so the flags and the object agree.


def _env(name: str) -> dict[str, Any]:
    return {"envvar": f"DRIFT_SIMULATE_{name}", "show_envvar": True, "show_default": True}


@click.command()
@click.option(
    "--peers",
    type=click.IntRange(1),
    default=Settings.peers,
    help="Synthetic peers.",
    **_env("PEERS"),
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
    default=Settings.arrival_rate,
    help="Peers per second (default: all at once).",
    **_env("ARRIVAL_RATE"),
)
@click.option(
    "--hold",
    type=click.FloatRange(0),
    default=Settings.hold,
    help="Seconds a verified pair stays connected.",
    **_env("HOLD"),
)
@click.option(
    "--next-fraction",
    type=click.FloatRange(0, 1),
    default=Settings.next_fraction,
    help="Share of peers that press next once connected and must get a new verified partner.",
    **_env("NEXT_FRACTION"),
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=Settings.timeout,
    help="Seconds each pair has from matched to verified.",
    **_env("TIMEOUT"),
)
@click.option(
    "--trickle/--no-trickle",
    default=Settings.trickle,
    help="Send ICE candidates as ice-candidate frames (else they stay in the SDP).",
    **_env("TRICKLE"),
)
@click.option(
    "--media-fraction",
    type=click.FloatRange(0, 1),
    default=Settings.media_fraction,
    help="Share of pairs that also send identity video (at least one pair when > 0).",
    **_env("MEDIA_FRACTION"),
)
@click.option(
    "--procs",
    type=click.IntRange(1, 64),
    default=Settings.procs,
    help="Worker processes to spread the peers over [default: one per core (at most "
    f"{AUTO_PROCS_MAX}) from {AUTO_PROCS_FROM} peers on, else 1].",
    **_env("PROCS"),
)
@click.option(
    "--concurrency",
    type=click.IntRange(2),
    default=Settings.concurrency,
    help="Most peers in flight at once per process (the rest queue to start).",
    **_env("CONCURRENCY"),
)
@click.option(
    "--min-success",
    type=click.FloatRange(0, 1),
    default=Settings.min_success,
    help="Pass when this share of peers verified (default: every one).",
    **_env("MIN_SUCCESS"),
)
@click.option(
    "--real-interfaces",
    is_flag=True,
    default=Settings.real_interfaces,
    help="Gather ICE candidates on the machine's real interfaces (default: 127.0.0.1 only).",
    **_env("REAL_INTERFACES"),
)
@click.option(
    "--report-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Settings.report_dir,
    help="Write the reports here (default: reports/<timestamp>-simulate/).",
    envvar="DRIFT_SIMULATE_REPORT_DIR",
    show_envvar=True,
)
@progress_option("Live progress display (counts per state and a bar of peers done).")
@click.option(
    "--no-live",
    is_flag=True,
    default=False,
    hidden=True,
    help="Old name of --no-progress.",
    **_env("NO_LIVE"),
)
@click.option(
    "--seed",
    type=int,
    default=Settings.seed,
    help="Seed of the --next-fraction draw.",
    **_env("SEED"),
)
@click.option(
    "--ice-policy",
    type=click.Choice(["all", "relay"]),
    default=Settings.ice_policy,
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
    default=Settings.turn_secret,
    help="coturn's static-auth-secret, for the embedded server's TURN credentials "
    "(prefer the variable).",
    envvar="DRIFT_TURN_SECRET",
    show_envvar=True,
)
@click.option(
    "--turn-ttl",
    type=click.FloatRange(1),
    default=Settings.turn_ttl,
    help="Seconds the embedded server's TURN credentials stay valid (default: drift serve's).",
    envvar="DRIFT_SIMULATE_TURN_TTL",
    show_envvar=True,
)
@click.option(
    "--network",
    default=Settings.network,
    metavar="PROFILE",
    help="Put every peer in its own home behind a NAT/firewall of this profile (a shipped "
    "name: lan, cone, symmetric, udp-blocked, lossy, mixed; or a .toml path), with the "
    "server, STUN and TURN on the lab's internet. Needs root; see docs/networks.md.",
    **_env("NETWORK"),
)
@click.option(
    "--no-turn",
    is_flag=True,
    default=Settings.no_turn,
    help="With --network: welcome hands out STUN only, to show who fails without TURN.",
    **_env("NO_TURN"),
)
@click.option(
    "--server-fault",
    "server_faults",
    multiple=True,
    hidden=True,
    help="TESTING ONLY: start the embedded server with this --fault.",
)
def simulate(**flags: Any) -> None:
    """Headless aiortc peers that prove matching and real WebRTC connections end to end.

    Exit codes: 0 every pair verified (or --min-success met), 1 a check failed,
    2 bad usage, 3 the target could not be reached, 130/143 interrupted by
    SIGINT/SIGTERM (partial report marked interrupted).
    """
    settings = settings_from_flags(flags)
    started = time.monotonic()
    result: SimulateResult | None = None
    folder = settings.report_dir or run_dir("simulate")
    settings = dataclasses.replace(settings, report_dir=folder)
    signals.raise_on_signals()
    # Head start (see the module docstring): the server's process and the fork
    # server begin now; a --network run starts its server inside the lab later.
    server: EmbeddedServer | None = None
    try:
        if not settings.urls and settings.network is None:
            server = EmbeddedServer.for_run(settings, folder)
            server.spawn()
            if not any(url.startswith("turns:") for url in settings.turn_urls):
                # Nothing of this run speaks TLS (plain ws:// to the embedded server,
                # STUN/TURN over UDP or TCP): this process and the peers' fork server
                # skip loading the CA bundle at aiohttp's import, as the server does.
                os.environ.update(NO_CA_BUNDLE)
        assert settings.procs is not None
        prestart(settings.procs)
        from drift import aio
        from drift.simulate.run import network_lab, simulate_run
        from drift.simulate.runner import tune_gc

        tune_gc()
        console = Console(stderr=False)
        with network_lab(settings) as lab:
            result = aio.run(simulate_run(settings, console, lab, server=server))
    except KeyboardInterrupt as exc:
        # before or after the event loop: this command's imports, the lab's set-up
        # or teardown (whose own SIGTERM handler raises a plain KeyboardInterrupt)
        signum = exc.signum if isinstance(exc, Interrupted) else signals.received()
        signum = signum or signal.SIGINT
        if result is None:
            _interrupted_before_run(settings, folder, signum, time.monotonic() - started)
        signals.exit_interrupted(signum)
    except OSError as exc:
        # click would take an escaping EPIPE for a closed stdout and exit silently
        raise DriftError(f"simulate failed: {exc}") from exc
    finally:
        if server is not None:
            server.stop_now()  # a no-op once the run has stopped it
    assert result is not None
    set_summary(result.summary)
    with contextlib.suppress(Exception):
        sys.stdout.flush()
    signum = signals.received()
    if result.summary.get("interrupted") and signum is not None:
        signals.exit_interrupted(signum, f"partial report: {result.report_dir}")
    sys.exit(int(result.exit_code))


def _interrupted_before_run(settings: Settings, folder: Path, signum: int, wall: float) -> None:
    """The report folder of a run stopped before its peers could start: still complete."""
    code = signals.exit_code_for(signum)
    name = signal.Signals(signum).name
    write_incomplete(
        folder,
        kind="simulate",
        verdict="interrupted",
        exit_code=code,
        reason=f"interrupted by {name} after {wall:.1f} s, before any peer started; the "
        "embedded server was stopped",
        wall_s=wall,
        facts={"settings": settings.report_options()},
    )


def settings_from_flags(flags: dict[str, Any]) -> Settings:
    """The flags of the command as :class:`Settings`; ConfigError for a bad combination.

    Every option is named after its field, except ``--progress`` (``live``).
    """
    flags = dict(flags)
    flags["live"] = flags.pop("progress") and not flags.pop("no_live")
    settings = Settings(**flags)
    urls, peers = settings.urls, settings.peers
    for url in urls:
        if not url.startswith(("ws://", "wss://")):
            raise ConfigError(f"--url must be a ws:// or wss:// URL, got {url!r}")
    if urls and settings.server_faults:
        raise ConfigError("--server-fault applies to the embedded server only (no --url)")
    settings = settings.resolved()
    if settings.procs is not None and settings.procs > peers:
        raise ConfigError(f"--procs {settings.procs} is more than --peers {peers}")
    if urls and (settings.turn_urls or settings.turn_ttl is not None):
        raise ConfigError(
            "--turn-url/--turn-ttl configure the embedded server only; with --url the "
            "target's welcome carries its own TURN credentials"
        )
    if settings.network is not None:
        from drift.netlab import requirements
        from drift.netlab.profile import load_profile

        load_profile(settings.network)  # a bad profile: exit 2 naming the file and key
        if urls or settings.turn_urls or settings.real_interfaces:
            raise ConfigError(
                "--network runs the embedded server, STUN and TURN inside the lab; it "
                "cannot be combined with --url, --turn-url or --real-interfaces"
            )
        requirements.require()
    elif settings.no_turn:
        raise ConfigError("--no-turn applies to --network runs only")
    if settings.turn_urls and not settings.turn_secret:
        raise ConfigError("--turn-url needs --turn-secret (or DRIFT_TURN_SECRET)")
    if not settings.turn_urls:
        # the secret only signs the embedded server's TURN credentials
        settings = dataclasses.replace(settings, turn_secret=None)
    return settings
