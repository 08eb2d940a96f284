"""The ``drift`` command line: the group, its lazily loaded commands and the error mapping.

Every error a user can cause ends here as one readable line and an
:class:`~drift.exitcodes.ExitCode`, never as a traceback.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

import click

from drift import __version__
from drift.errors import CheckFailed, ConfigError, DriftError, TargetUnreachable
from drift.exitcodes import ExitCode

#: Every subcommand lives in its own module, imported only when invoked, so
#: ``drift --help`` and ``drift serve`` never pay for aiortc or report code.
LAZY_COMMANDS: dict[str, str] = {
    "serve": "drift.serve.command:serve",
    "simulate": "drift.simulate.command:simulate",
    "loadtest": "drift.loadtest.command:loadtest",
    "fuzz": "drift.fuzz.command:fuzz",
    "turn-check": "drift.turn.command:turn_check",
    "bench": "drift.bench.command:bench",
    "proxy": "drift.proxy.command:proxy",
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


__all__ = ["CheckFailed", "main"]
