"""Load from many machines: a drift master and locust workers that join it from anywhere.

``drift loadtest SCENARIO --master --expect-workers N`` runs the server (or aims at
``--url``), the sampler and a locust master; ``drift loadtest --worker --master-host
HOST`` on each other machine runs a locust worker that joins it. The master's report,
thresholds and server sampling are the same as for a local run: every raw sample
travels from the workers to the master (the locustfile's message channel).

A worker needs no scenario file: locust's workers download the master's locustfile
(``-f -``), and the master's locustfile is a small wrapper written here that carries
the scenario's text and loads the locustfile of the worker's own drift.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, Final

#: the wrapper's file name (a worker writes the downloaded copy under this name)
WRAPPER_NAME: Final = "drift_remote_locustfile.py"
#: the locust default, for both ends
DEFAULT_MASTER_PORT: Final = 5557
_MODULE: Final = "drift_locustfile"


def write_wrapper(folder: Path, scenario_text: str, scenario_name: str) -> Path:
    """The master's locustfile: the scenario's text, and a call to :func:`load_locustfile`."""
    path = folder / WRAPPER_NAME
    path.write_text(
        '"""Written by drift loadtest --master: the scenario travels to remote workers."""\n'
        "from drift.loadtest.remote import load_locustfile\n\n"
        f"load_locustfile(globals(), {scenario_text!r}, {scenario_name!r})\n",
        encoding="utf-8",
    )
    return path


def load_locustfile(namespace: dict[str, Any], scenario_text: str, scenario_name: str) -> None:
    """Run drift's locustfile for ``scenario_text`` and copy its classes into ``namespace``.

    Locust finds the user and shape classes among the wrapper's globals; the
    locustfile reads the scenario from ``DRIFT_SCENARIO``, here a private copy.
    """
    from drift.loadtest.runner import locustfile

    folder = Path(tempfile.mkdtemp(prefix="drift-scenario-"))
    scenario = folder / f"{scenario_name}.toml"
    scenario.write_text(scenario_text, encoding="utf-8")
    os.environ["DRIFT_SCENARIO"] = str(scenario)
    spec = importlib.util.spec_from_file_location(_MODULE, locustfile())
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[_MODULE] = module
    spec.loader.exec_module(module)
    for name, value in vars(module).items():
        if isinstance(value, type) and value.__module__ == _MODULE:
            namespace[name] = value


def worker_command(master_host: str, master_port: int) -> list[str]:
    """A locust worker that downloads the master's locustfile and joins it."""
    return [
        sys.executable, "-m", "locust", "-f", "-", "--worker",
        "--master-host", master_host, "--master-port", str(master_port),
    ]  # fmt: skip
