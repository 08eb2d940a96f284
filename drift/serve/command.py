"""``drift serve``: flags (and ``DRIFT_*`` variables) -> frozen :class:`ServerConfig` -> run.

Every option is a field of :class:`~drift.serve.config.ServerConfig` of the
same name, with its default read from there. :func:`config_argv` turns a config
back into flags, which is how ``--workers`` starts its children.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any, Final, TypeVar

import click

from drift.aio import run
from drift.cli import LOG_JSON_KEY
from drift.core.lobby import Fault
from drift.errors import ConfigError
from drift.harness.serve import ready_message
from drift.serve.config import DEFAULTS, ServerConfig, Unsafe
from drift.serve.logs import setup_logging

F = TypeVar("F", bound=Callable[..., Any])


def env_option(*decls: str, env: str, **kwargs: Any) -> Callable[[F], F]:
    """A click option that can also be set as ``DRIFT_<env>``, serve's short variable.

    The rule's ``DRIFT_SERVE_<FLAG>`` is added to every option by ``drift.cli``;
    these short names, which deployments already use, keep working beside it.
    """
    kwargs.setdefault("show_default", True)
    return click.option(*decls, envvar=f"DRIFT_{env}", show_envvar=True, **kwargs)


_LOG_LEVELS = click.Choice(["debug", "info", "warning", "error"], case_sensitive=False)
D = DEFAULTS


@click.command()
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
@env_option(
    "--log-level",
    env="LOG_LEVEL",
    type=_LOG_LEVELS,
    default=D.log_level,
    help="Least severe log record printed.",
)
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
    help="Browser Origin allowed to open /ws (repeatable, exact match). With a list, only "
    "the list counts; without one, only the server's own origin. Space-separated in the "
    "variable.",
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
    help="Unsent bytes queued for one peer after which it counts as not reading and is "
    "cut off; 0 = no cap (--send-timeout still applies).",
)
@env_option(
    "--send-timeout",
    env="SEND_TIMEOUT",
    type=click.FloatRange(0),
    default=D.send_timeout,
    help="Seconds a peer's queued frames may wait without one byte being taken before it "
    "is cut off; 0 = never.",
)
@env_option(
    "--upgrade-timeout",
    env="UPGRADE_TIMEOUT",
    type=click.FloatRange(0),
    default=D.upgrade_timeout,
    help="Seconds a new socket has to finish its first HTTP request (the WebSocket "
    "upgrade); 0 = no deadline.",
)
@env_option(
    "--keepalive-timeout",
    env="KEEPALIVE_TIMEOUT",
    type=click.FloatRange(0),
    default=D.keepalive_timeout,
    help="Seconds an HTTP socket may stay idle between two requests.",
)
@env_option(
    "--max-handshakes",
    env="MAX_HANDSHAKES",
    type=click.IntRange(1),
    default=D.max_handshakes,
    help="Sockets that have not finished their first request yet, at once (per address: "
    "--max-connections-per-ip, unless --trust-proxy); more are dropped.",
)
@env_option(
    "--unsafe",
    "unsafe",
    env="UNSAFE",
    multiple=True,
    hidden=True,
    type=click.Choice([u.value for u in Unsafe]),
    help="TESTING ONLY: switch off one protection to prove drift fuzz --attack finds it.",
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
@click.option(
    "--json",
    is_flag=True,
    help="Same as --log-format json: every line printed is one JSON object; stdout holds "
    'only the ready line {"event": "ready", "url": ...}.',
)
def serve(**options: Any) -> None:
    """Run the reference signaling server and the browser client."""
    config = server_config(options)  # a bad flag is a plain line like click's own
    setup_logging(config.log_level, config.log_format)
    if config.log_format == "json":
        click.get_current_context().meta[LOG_JSON_KEY] = True  # from here on, its fatal line too

    def ready(url: str) -> None:
        click.echo(ready_message(url, config.log_format))
        sys.stdout.flush()

    if config.workers > 1:
        from drift.serve.workers import run_workers

        sys.exit(run_workers(config, ready))
    from drift.serve.server import run_server

    try:
        run(run_server(config, ready))
    except OSError as exc:
        raise ConfigError(f"cannot listen on {config.host}:{config.port}: {exc.strerror}") from exc


def server_config(options: dict[str, Any]) -> ServerConfig:
    """The frozen settings from the parsed options (flags and ``DRIFT_*`` variables)."""
    if options.pop("json", False):
        options["log_format"] = "json"
    for param in serve.params:
        if isinstance(param, click.Option) and param.multiple and param.name:
            options[param.name] = tuple(options[param.name])
    options["faults"] = frozenset(Fault(f) for f in options["faults"])
    options["unsafe"] = frozenset(Unsafe(u) for u in options["unsafe"])
    if options["turn_urls"] and not options["turn_secret"]:
        raise ConfigError("--turn-url needs --turn-secret (or DRIFT_TURN_SECRET)")
    return ServerConfig(**options)


#: Options held in the config as a frozenset of enum members.
ENUM_SETS: Final = frozenset({"faults", "unsafe"})

#: Options that are not fields of the config (``--json`` sets ``log_format``).
NOT_CONFIG: Final = frozenset({"json"})

#: Options whose values never go on a command line, where any local user can
#: read them with ps: :func:`config_env` passes them as their ``DRIFT_*`` variable.
SECRET_OPTIONS: Final = frozenset({"turn_secret"})


def config_argv(config: ServerConfig) -> list[str]:
    """The ``drift serve`` flags that give back ``config`` (all but :data:`SECRET_OPTIONS`).

    Written from the command's own options, so a flag added to ``serve`` reaches
    the ``--workers`` children without a change here.
    """
    argv: list[str] = []
    for param in serve.params:
        if not isinstance(param, click.Option) or param.name in SECRET_OPTIONS | NOT_CONFIG:
            continue
        assert param.name is not None
        value = getattr(config, param.name)
        flag = param.opts[0]
        if param.is_flag and param.secondary_opts:
            argv.append(flag if value else param.secondary_opts[0])
        elif param.is_flag:
            argv += [flag] if value else []
        elif param.multiple:
            items = sorted(v.value for v in value) if param.name in ENUM_SETS else value
            for item in items:
                argv += [flag, str(item)]
        elif value is not None:
            # repr: the shortest text that parses back to the same float
            argv += [flag, repr(value) if isinstance(value, float) else str(value)]
    return argv


def config_env(config: ServerConfig) -> dict[str, str]:
    """The :data:`SECRET_OPTIONS` of ``config`` as the variables their options read."""
    env: dict[str, str] = {}
    for param in serve.params:
        if isinstance(param, click.Option) and param.name in SECRET_OPTIONS:
            value = getattr(config, param.name)
            names = [param.envvar] if isinstance(param.envvar, str) else param.envvar or []
            if value is not None and names:
                env[names[0]] = str(value)
    return env


__all__ = ["config_argv", "config_env", "serve", "server_config"]
