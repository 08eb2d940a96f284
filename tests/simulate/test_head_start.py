"""``drift simulate`` starts its server and the peers' imports before its own heavy imports."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import psutil
from rich.console import Console

from drift.exitcodes import ExitCode
from drift.simulate.embedded import EmbeddedServer
from drift.simulate.run import Settings, simulate_run

#: what the run needs and the command module must leave to it (aiohttp alone is ~0.2 s)
HEAVY = ("aiohttp", "aiortc", "aioice", "numpy", "av", "drift.simulate.run")


def test_the_command_module_imports_no_heavy_stack() -> None:
    code = (
        "import json, sys\nimport drift.simulate.command\nprint(json.dumps(sorted(sys.modules)))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    loaded = set(json.loads(out.stdout))
    assert not [name for name in HEAVY if name in loaded]


async def test_a_run_adopts_a_spawned_server_and_stops_it(tmp_path: Path) -> None:
    settings = Settings(peers=2, media_fraction=0.0, live=False, report_dir=tmp_path).resolved()
    server = EmbeddedServer.for_run(settings, tmp_path)
    server.spawn()
    pid = server.pid
    assert psutil.pid_exists(pid)
    result = await simulate_run(settings, Console(quiet=True), server=server)
    assert result.exit_code == ExitCode.OK, result.summary
    # the run used that process and stopped it
    assert result.summary["target"]["urls"] == [server.ws_url]
    assert not psutil.pid_exists(pid)
