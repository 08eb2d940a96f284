"""The ``drift`` command line: the group, its lazily loaded commands and the rules they share.

Rules every command follows, applied here once rather than in each command:

- every error a user can cause ends as one readable line and an
  :class:`~drift.exitcodes.ExitCode`, never as a traceback;
- every option ``--some-flag`` of ``drift CMD`` can also be set as the
  environment variable ``DRIFT_CMD_SOME_FLAG`` (:func:`env_name`), shown in
  ``--help``; names a command declared before this rule (``drift serve``'s
  ``DRIFT_PORT`` ...) keep working after it;
- ``--json`` prints the run's summary as one JSON document on stdout, with
  everything else the run prints moved to stderr (:func:`set_summary`);
- ``--progress/--no-progress`` is the one name of the live progress switch
  (:func:`progress_option`);
- a command whose optional dependencies are not installed says which extra
  to install and exits 2 (:data:`COMMAND_EXTRAS`).
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import IO, Any, Final, NoReturn, TypeVar

import click

from drift import __version__
from drift.errors import CheckFailed, ConfigError, DriftError, TargetUnreachable
from drift.exitcodes import ExitCode


@dataclass(frozen=True, slots=True)
class Entry:
    """A subcommand: where it lives, its one-line summary and the extras it needs."""

    target: str
    summary: str
    extras: tuple[str, ...] = ()


#: Every subcommand lives in its own module, imported only when invoked, so
#: ``drift serve`` never pays for aiortc or report code. The summaries are the
#: command list of ``drift --help``: whole sentences, never cut.
COMMANDS: Final[dict[str, Entry]] = {
    "serve": Entry(
        "drift.serve.command:serve", "Run the reference signaling server and browser client."
    ),
    "simulate": Entry(
        "drift.simulate.command:simulate",
        "Prove that WebRTC peers get matched and really connect.",
        ("simulate",),
    ),
    "loadtest": Entry(
        "drift.loadtest.command:loadtest",
        "Load a server with a locust scenario and judge its thresholds.",
        ("loadtest",),
    ),
    "fuzz": Entry(
        "drift.fuzz.command:fuzz", "Send malformed frames or abuse and check the server holds."
    ),
    "turn-check": Entry(
        "drift.turn.command:turn_check",
        "Check that a TURN server relays with drift's credentials.",
        ("simulate",),
    ),
    "bench": Entry(
        "drift.bench.command:bench",
        "Measure drift against baselines run alongside it.",
        ("bench",),
    ),
    "proxy": Entry(
        "drift.proxy.command:proxy", "Put a lying proxy in front of a server to test a client."
    ),
}

#: The modules each extra of pyproject.toml brings (tests/cli checks both agree):
#: found missing, the command that needs the extra names it instead of failing.
EXTRA_MODULES: Final[dict[str, tuple[str, ...]]] = {
    "simulate": ("aiortc", "aioice", "av", "numpy", "OpenSSL"),
    "loadtest": ("locust", "gevent", "websocket", "psutil"),
    "network": ("aiortc", "aioice", "av", "numpy", "OpenSSL", "pyroute2", "cryptography"),
    "bench": (
        *("aiortc", "aioice", "av", "numpy", "OpenSSL", "locust", "gevent", "websocket"),
        *("psutil", "pyinstrument"),
    ),
}

#: the distribution name, as ``pip install`` takes it
DISTRIBUTION: Final = "drift-signal"

#: environment variables start with this, then the command, then the flag
ENV_PREFIX: Final = "DRIFT"

F = TypeVar("F", bound=Callable[..., Any])


# ------------------------------------------------------------- environment rule


def env_name(command: str, option: click.Option) -> str | None:
    """``--some-flag`` of ``drift CMD`` -> ``DRIFT_CMD_SOME_FLAG``; None for a flag-less option.

    Named after the flag a user types (not the Python parameter), from its
    first long form: ``--progress/--no-progress`` is ``DRIFT_<CMD>_PROGRESS``.
    """
    longs = [opt for opt in option.opts if opt.startswith("--")]
    if not longs:
        return None
    words = [ENV_PREFIX, command, longs[0][2:]]
    return "_".join(words).upper().replace("-", "_")


def apply_env_rule(command_name: str, command: click.Command) -> None:
    """Give every option of ``command`` its :func:`env_name`, keeping names it declared.

    The rule's name is read first; an older name (``DRIFT_PORT`` of serve)
    still works when the rule's is unset. Idempotent.
    """
    for param in command.params:
        if not isinstance(param, click.Option):
            continue
        name = env_name(command_name, param)
        if name is None:
            continue
        declared = [param.envvar] if isinstance(param.envvar, str) else list(param.envvar or ())
        param.envvar = list(dict.fromkeys([name, *declared]))
        param.show_envvar = True


# ------------------------------------------------------------------- progress


def progress_option(help_text: str = "Live progress display.") -> Callable[[F], F]:
    """``--progress/--no-progress`` (default on), the one name of the switch in every command."""
    return click.option(
        "--progress/--no-progress", "progress", default=True, show_default="on", help=help_text
    )


# ----------------------------------------------------------------------- json


JSON_KEY: Final = "drift.json"
SUMMARY_KEY: Final = "drift.summary"
#: set by a command whose every printed line must be JSON (``drift serve --log-format json``)
LOG_JSON_KEY: Final = "drift.log_json"


@dataclass(slots=True)
class JsonOutput:
    """Stdout kept for the one JSON document; everything else printed goes to stderr.

    At the file-descriptor level when stdout is fd 1, so child processes that
    inherit it (the embedded server, locust) cannot write into the document.
    """

    command: str
    stream: IO[str]
    saved_fd: int | None = None
    summary: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def start(cls, command: str) -> JsonOutput:
        sys.stdout.flush()
        out = cls(command, sys.stdout)
        try:
            fd = sys.stdout.fileno()
        except (OSError, ValueError):  # io.UnsupportedOperation: a test's captured stdout
            fd = -1
        if fd == 1:
            out.saved_fd = os.dup(1)
            os.dup2(2, 1)
        sys.stdout = sys.stderr
        return out

    def finish(self, exit_code: int, error: str | None, summary: Any) -> None:
        sys.stdout.flush()
        sys.stdout = self.stream
        document = {
            "command": self.command,
            "exit_code": exit_code,
            "error": error,
            "summary": summary,
        }
        text = json.dumps(document, default=str, sort_keys=False) + "\n"
        if self.saved_fd is not None:
            self.stream.flush()
            os.dup2(self.saved_fd, 1)
            os.close(self.saved_fd)
            self.saved_fd = None
        self.stream.write(text)
        self.stream.flush()


def _json_callback(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    if value and JSON_KEY not in ctx.meta:
        ctx.meta[JSON_KEY] = JsonOutput.start(ctx.info_name or "drift")


def json_option() -> click.Option:
    """``--json``: the summary as one JSON document on stdout, all else on stderr."""
    return click.Option(
        ["--json"],
        is_flag=True,
        expose_value=False,
        callback=_json_callback,
        help="Print the summary as one JSON document on stdout (progress and logs on stderr).",
    )


def set_summary(summary: Mapping[str, Any] | list[Any]) -> None:
    """The run's summary: what ``--json`` prints (a no-op outside the ``drift`` command)."""
    ctx = click.get_current_context(silent=True)
    if ctx is not None:
        ctx.meta[SUMMARY_KEY] = summary


def json_requested() -> bool:
    """True when the running command was given ``--json``."""
    ctx = click.get_current_context(silent=True)
    return ctx is not None and JSON_KEY in ctx.meta


# --------------------------------------------------------------------- extras


def installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a finder that refuses it; a half-imported module
        return False


def missing_extras(extras: tuple[str, ...]) -> list[str]:
    """The extras of ``extras`` with a module that is not installed."""
    return [extra for extra in extras if not all(map(installed, EXTRA_MODULES[extra]))]


def install_hint(extras: list[str]) -> str:
    return f"pip install '{DISTRIBUTION}[{','.join(extras)}]'"


def _needs_extra(name: str, entry: Entry, missing: list[str]) -> click.Command:
    """A stand-in for a command whose extra is missing: it says what to install, exit 2."""
    message = (
        f"drift {name} needs the [{','.join(missing)}] extra, which is not installed: "
        f"{install_hint(missing)}"
    )

    def refuse() -> NoReturn:
        raise ConfigError(message)

    return click.Command(
        name,
        callback=refuse,
        help=f"{entry.summary}\n\n{message}",
        short_help=f"{entry.summary} (needs [{','.join(missing)}])",
        context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
        add_help_option=False,
    )


# ---------------------------------------------------------------------- group


class DriftGroup(click.Group):
    """Lazy subcommands with the shared rules; DriftError becomes one line and an exit code."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), *COMMANDS])

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        return super().get_command(ctx, cmd_name) or self._load(cmd_name)

    @staticmethod
    def _load(name: str) -> click.Command | None:
        entry = COMMANDS.get(name)
        if entry is None:
            return None
        missing = missing_extras(entry.extras)
        if missing:
            return _needs_extra(name, entry, missing)
        module_name, attr = entry.target.split(":")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name and module_name.startswith(exc.name):
                return None  # that part of drift is not in this build
            raise
        command = getattr(module, attr)
        assert isinstance(command, click.Command)
        return conform(name, entry, command)

    def invoke(self, ctx: click.Context) -> Any:
        code, error, result = 0, None, None
        usage: click.ClickException | None = None
        try:
            result = super().invoke(ctx)
        except ConfigError as exc:
            code, error = ExitCode.USAGE, str(exc)
        except TargetUnreachable as exc:
            code, error = ExitCode.UNREACHABLE, str(exc)
        except CheckFailed as exc:
            code, error = ExitCode.CHECK_FAILED, str(exc)
        except DriftError as exc:
            code, error = ExitCode.CHECK_FAILED, str(exc)
        except KeyboardInterrupt as exc:
            # drift.harness.signals.Interrupted carries 130 or 143
            code, error = getattr(exc, "exit_code", ExitCode.INTERRUPTED), "interrupted"
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 0 if exc.code is None else 1
        except click.exceptions.Exit as exc:
            code = exc.exit_code
        except click.ClickException as exc:
            code, error, usage = exc.exit_code, exc.format_message(), exc
        output = ctx.meta.pop(JSON_KEY, None)
        if isinstance(output, JsonOutput):
            output.finish(int(code), error, ctx.meta.get(SUMMARY_KEY))
        if usage is not None:
            raise usage  # click prints it with the usage line
        if error is not None:
            click.echo(_error_line(ctx, error), err=True)
        if code:
            sys.exit(int(code))
        return result


def _error_line(ctx: click.Context, error: str) -> str:
    if ctx.meta.get(LOG_JSON_KEY):
        import logging

        from drift.serve.logs import json_event

        return json_event("fatal", logging.ERROR, error=error)
    return f"drift: {error}"


def conform(name: str, entry: Entry, command: click.Command) -> click.Command:
    """The shared rules on a loaded command: env names, ``--json``, the summary line."""
    if not any("--json" in p.opts for p in command.params if isinstance(p, click.Option)):
        command.params.append(json_option())
    apply_env_rule(name, command)
    command.short_help = entry.summary
    return command


@click.group(cls=DriftGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="drift")
def main() -> None:
    """Prove that random 1:1 video chat peers get matched and connected.

    Every flag --some-flag of drift CMD is also the variable DRIFT_CMD_SOME_FLAG
    (the flag wins); drift serve also reads its short names (DRIFT_PORT ...).
    Every command takes --json (its summary as one JSON document on stdout).
    """


__all__ = [
    "COMMANDS",
    "EXTRA_MODULES",
    "CheckFailed",
    "apply_env_rule",
    "env_name",
    "json_requested",
    "main",
    "progress_option",
    "set_summary",
]
