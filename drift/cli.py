"""The ``drift`` command line: flags (and ``DRIFT_*`` variables) -> frozen config -> run.

Every error a user can cause ends here as one readable line and an
:class:`~drift.exitcodes.ExitCode`, never as a traceback.
"""

from __future__ import annotations

import asyncio
import importlib
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click

from drift import __version__
from drift.core.lobby import Fault
from drift.errors import CheckFailed, ConfigError, DriftError, TargetUnreachable
from drift.exitcodes import ExitCode
from drift.harness.serve import ready_message
from drift.serve.config import DEFAULTS, ServerConfig
from drift.serve.logs import setup_logging

F = TypeVar("F", bound=Callable[..., Any])


def env_option(*decls: str, env: str, **kwargs: Any) -> Callable[[F], F]:
    """A click option that can also be set as the ``DRIFT_<env>`` environment variable."""
    kwargs.setdefault("show_default", True)
    return click.option(*decls, envvar=f"DRIFT_{env}", show_envvar=True, **kwargs)


#: Subcommands that live in their own modules, imported only when invoked, so
#: ``drift --help`` and ``drift serve`` never pay for aiortc or report code.
LAZY_COMMANDS: dict[str, str] = {
    "simulate": "drift.simulate.command:simulate",
    "loadtest": "drift.loadtest.command:loadtest",
    "fuzz": "drift.fuzz.command:fuzz",
    "turn-check": "drift.turn.command:turn_check",
    "bench": "drift.bench.command:bench",
}


class DriftGroup(click.Group):
    """Lazy subcommands; DriftError becomes one line on stderr and a documented exit code."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        lazy = [name for name in LAZY_COMMANDS if self._load(name) is not None]
        return sorted([*super().list_commands(ctx), *lazy])

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        return super().get_command(ctx, cmd_name) or self._load(cmd_name)

    @staticmethod
    def _load(name: str) -> click.Command | None:
        target = LAZY_COMMANDS.get(name)
        if target is None:
            return None
        module_name, attr = target.split(":")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name and module_name.startswith(exc.name):
                return None  # that part of drift is not in this build
            raise
        command = getattr(module, attr)
        assert isinstance(command, click.Command)
        return command

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ConfigError as exc:
            _fail(str(exc), ExitCode.USAGE)
        except TargetUnreachable as exc:
            _fail(str(exc), ExitCode.UNREACHABLE)
        except CheckFailed as exc:
            _fail(str(exc), ExitCode.CHECK_FAILED)
        except DriftError as exc:
            _fail(str(exc), ExitCode.CHECK_FAILED)
        except KeyboardInterrupt:
            _fail("interrupted", ExitCode.INTERRUPTED)


def _fail(message: str, code: ExitCode) -> None:
    click.echo(f"drift: {message}", err=True)
    sys.exit(int(code))


@click.group(cls=DriftGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="drift")
def main() -> None:
    """Prove that random 1:1 video chat peers get matched and connected."""


_LOG_LEVELS = click.Choice(["debug", "info", "warning", "error"], case_sensitive=False)
D = DEFAULTS


@main.command()
@env_option("--host", env="HOST", default=D.host, help="Address to listen on.")
@env_option(
    "--port",
    env="PORT",
    type=click.IntRange(0, 65535),
    default=D.port,
    help="Port to listen on; 0 picks a free one (the URL is printed).",
)
@env_option(
    "--rematch-cooldown",
    env="REMATCH_COOLDOWN",
    type=click.FloatRange(0),
    default=D.rematch_cooldown,
    help="Seconds before two peers whose room ended can be paired again.",
)
@env_option("--log-level", env="LOG_LEVEL", type=_LOG_LEVELS, default=D.log_level)
@env_option(
    "--log-format",
    env="LOG_FORMAT",
    type=click.Choice(["json", "console"]),
    default=D.log_format,
    help="One JSON object per line, or readable lines.",
)
@env_option(
    "--max-connections",
    env="MAX_CONNECTIONS",
    type=click.IntRange(1),
    default=D.max_connections,
    help="Global cap on open WebSockets (1013 above it).",
)
@env_option(
    "--max-connections-per-ip",
    env="MAX_CONNECTIONS_PER_IP",
    type=click.IntRange(0),
    default=D.max_connections_per_ip,
    help="Cap per client address; 0 = no cap.",
)
@env_option(
    "--trust-proxy/--no-trust-proxy",
    env="TRUST_PROXY",
    default=D.trust_proxy,
    help="Take the client address from X-Forwarded-For (only behind your own proxy).",
)
@env_option(
    "--rate-limit",
    env="RATE_LIMIT",
    type=click.FloatRange(0),
    default=D.rate_limit,
    help="Messages per second per connection; 0 = off.",
)
@env_option(
    "--rate-burst",
    env="RATE_BURST",
    type=click.IntRange(1),
    default=D.rate_burst,
    help="Messages a connection may send at once before the rate applies.",
)
@env_option(
    "--max-queue",
    env="MAX_QUEUE",
    type=click.IntRange(1),
    default=D.max_queue,
    help="Most peers waiting at once (queue-full above it).",
)
@env_option(
    "--queue-timeout",
    env="QUEUE_TIMEOUT",
    type=click.FloatRange(0),
    default=D.queue_timeout,
    help="Seconds a peer may wait to be matched; 0 = forever.",
)
@env_option(
    "--allowed-origin",
    "allowed_origins",
    env="ALLOWED_ORIGINS",
    multiple=True,
    help="Browser Origin allowed to open /ws (repeatable, exact match; the server's own "
    "origin is always allowed). Space-separated in the variable.",
)
@env_option(
    "--heartbeat",
    env="HEARTBEAT",
    type=click.FloatRange(0),
    default=D.heartbeat,
    help="Seconds between WebSocket pings; a peer that misses the pong is dropped. 0 = off.",
)
@env_option(
    "--shutdown-timeout",
    env="SHUTDOWN_TIMEOUT",
    type=click.FloatRange(0),
    default=D.shutdown_timeout,
    help="Seconds to drain on SIGTERM before exiting.",
)
@env_option(
    "--stun-url",
    "stun_urls",
    env="STUN_URLS",
    multiple=True,
    help="STUN URL handed to peers in welcome (repeatable).",
)
@env_option(
    "--turn-url",
    "turn_urls",
    env="TURN_URLS",
    multiple=True,
    help="TURN URL handed to peers with time-limited credentials (repeatable).",
)
@env_option(
    "--turn-secret",
    env="TURN_SECRET",
    default=None,
    show_default=False,
    help="Shared secret of coturn's use-auth-secret (prefer the variable).",
)
@env_option(
    "--turn-ttl",
    env="TURN_TTL",
    type=click.FloatRange(1),
    default=D.turn_ttl,
    help="Seconds a TURN credential stays valid.",
)
@env_option(
    "--fault",
    "faults",
    env="FAULT",
    multiple=True,
    hidden=True,
    type=click.Choice([f.value for f in Fault]),
    help="TESTING ONLY: break a protocol rule on purpose to prove the checkers.",
)
@env_option(
    "--max-pending-bytes",
    env="MAX_PENDING_BYTES",
    type=click.IntRange(0),
    default=D.max_pending_bytes,
    help="Unsent bytes to one peer after which it counts as not reading and is cut off "
    "(at most 261120); 0 = never, its senders then wait for it.",
)
@env_option(
    "--redis",
    "redis_url",
    env="REDIS_URL",
    default=None,
    show_default=False,
    help="Share the queue with other nodes through this Redis (redis://host:port/db).",
)
@env_option(
    "--workers",
    env="WORKERS",
    type=click.IntRange(1),
    default=D.workers,
    help="Server processes on this port (SO_REUSEPORT); more than 1 needs --redis.",
)
@env_option(
    "--node-id",
    env="NODE_ID",
    default=None,
    show_default=False,
    help="This node's name in the cluster's /stats and logs (random when unset).",
)
@env_option(
    "--node-ttl",
    env="NODE_TTL",
    type=click.FloatRange(0.5),
    default=D.node_ttl,
    help="Seconds of silence after which a node counts as dead and its peers' partners are "
    "told (with --redis).",
)
@click.option("--reuse-port", is_flag=True, hidden=True, help="Set by --workers for each worker.")
def serve(**options: Any) -> None:
    """Run the reference signaling server and the browser client."""
    config = _server_config(options)
    setup_logging(config.log_level, config.log_format)
    from drift.serve.server import run_server

    def ready(url: str) -> None:
        click.echo(ready_message(url))
        sys.stdout.flush()

    if config.workers > 1:
        from drift.serve.workers import run_workers

        argv = sys.argv[sys.argv.index("serve") + 1 :] if "serve" in sys.argv else []
        sys.exit(run_workers(config, argv, ready))
    try:
        _run(run_server(config, ready))
    except OSError as exc:
        raise ConfigError(f"cannot listen on {config.host}:{config.port}: {exc.strerror}") from exc


def _server_config(options: dict[str, Any]) -> ServerConfig:
    options["faults"] = frozenset(Fault(f) for f in options["faults"])
    for key in ("allowed_origins", "stun_urls", "turn_urls"):
        options[key] = tuple(options[key])
    if options["turn_urls"] and not options["turn_secret"]:
        raise ConfigError("--turn-url needs --turn-secret (or DRIFT_TURN_SECRET)")
    return ServerConfig(**options)


def _run(coro: Any) -> Any:
    """asyncio.run with uvloop when it is installed (measured faster; see docs/performance.md)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


__all__ = ["CheckFailed", "main"]
