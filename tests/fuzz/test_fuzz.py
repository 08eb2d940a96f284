"""The fuzzer against a live in-process server, and the fuzzer's own checks.

Budgets: ``DRIFT_FUZZ_FRAMES`` (default 30,000, a few seconds) and ``DRIFT_SEED``
(default fixed, so CI is reproducible). A long run is ``drift fuzz --frames
1000000`` (docs/testing.md).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
from pathlib import Path

import pytest
from click.testing import CliRunner

from drift.cli import main
from drift.client import urls
from drift.core import protocol as p
from drift.core.lobby import Fault
from drift.fuzz.command import LogWatch, is_loopback_url
from drift.fuzz.mutate import KINDS, FrameSource, is_join
from drift.fuzz.runner import FuzzConfig, FuzzReport, run_fuzz
from drift.serve.server import Server
from tests.conftest import MakeServer

SEED = int(os.environ.get("DRIFT_SEED", "20261126"))
FRAMES = int(os.environ.get("DRIFT_FUZZ_FRAMES", "30000"))

#: Deep nesting once crashed the decoder (docs/testing.md "Known bugs");
#: test_deep_nesting_is_answered keeps a focused check on it.
KNOWN_BUG_KINDS = frozenset({"deep-nesting", "deep-nesting-ignored"})
HEALTHY_KINDS = frozenset(KINDS)
WATCHED = ("drift", "aiohttp", "asyncio")


def ws_url(server: Server) -> str:
    return urls.ws_url(server.url)


@pytest.fixture
def server_log(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    """Everything the server logs at WARNING and above, from its and aiohttp's loggers."""
    for name in WATCHED:
        caplog.set_level(logging.WARNING, logger=name)
    return caplog


def assert_no_unhandled_exception(caplog: pytest.LogCaptureFixture) -> None:
    bad = [
        f"{r.levelname} {r.name}: {r.getMessage()}"
        for r in caplog.records
        if r.name.split(".")[0] in WATCHED and (r.levelno >= logging.ERROR or r.exc_info)
    ]
    assert not bad, f"the server logged errors: {bad[:5]}"


def assert_passed(report: FuzzReport) -> None:
    assert report.ok, f"{report.problem_count} problems (seed {report.seed}): {report.problems}"


async def test_mutated_frames_are_all_answered_while_an_honest_pair_talks(
    make_server: MakeServer, server_log: pytest.LogCaptureFixture
) -> None:
    server = await make_server(rate_limit=0, max_connections_per_ip=0)
    cfg = FuzzConfig(
        url=ws_url(server),
        seed=SEED,
        connections=8,
        frames=FRAMES,
        duration=60.0,
        honest_interval=0.02,
        honest_pairs=3,
        kinds=HEALTHY_KINDS,
    )
    report = await run_fuzz(cfg)
    print(f"fuzz: {report.frames_tried} frames tried in {report.elapsed_s:.1f} s, seed {SEED}")
    assert_passed(report)
    assert report.frames_tried == FRAMES
    assert set(report.kinds) == HEALTHY_KINDS
    # every documented answer was exercised: the run did reach each rule
    assert {"invalid-json", "invalid-message", "unknown-type", "invalid-state"} <= set(
        report.errors
    )
    assert {1002, 1007, 1009} <= set(report.closes)
    assert "rate-limited" not in report.errors  # the limit is off on this server
    assert report.honest_relays >= 3 * 8
    assert report.stats_after["connections"] == 0
    assert server.lobby.connections == 0 and not server.lobby.queue and not server.lobby.rooms
    assert_no_unhandled_exception(server_log)


async def test_bursts_are_rate_limited_then_closed_with_1008(
    make_server: MakeServer, server_log: pytest.LogCaptureFixture
) -> None:
    server = await make_server(rate_limit=20, rate_burst=10, max_connections_per_ip=0)
    cfg = FuzzConfig(
        url=ws_url(server),
        seed=SEED + 1,
        connections=2,
        frames=100,
        bursts=4,
        burst_frames=120,
        # 2 frames per peer per round: ~8/s, well under the limit of 20/s
        honest_interval=0.25,
        kinds=HEALTHY_KINDS,
    )
    report = await run_fuzz(cfg)
    assert_passed(report)
    assert report.burst_errors["rate-limited"] >= 4
    assert report.burst_closes[1008] == 4
    assert report.honest_relays >= 4
    assert_no_unhandled_exception(server_log)


async def test_deep_nesting_is_answered(
    make_server: MakeServer, server_log: pytest.LogCaptureFixture
) -> None:
    server = await make_server(rate_limit=0, max_connections_per_ip=0)
    cfg = FuzzConfig(url=ws_url(server), seed=SEED, connections=2, frames=60, kinds=KNOWN_BUG_KINDS)
    report = await run_fuzz(cfg)
    assert_passed(report)
    assert_no_unhandled_exception(server_log)


@pytest.mark.parametrize(
    ("fault", "symptom"),
    [
        (Fault.DROP_CANDIDATES, "honest pair"),
        (Fault.CROSS_WIRE, "honest pair"),
        (Fault.SWAP_ROLES, "the peer that waited must answer"),
        (Fault.LEAK_ON_DISCONNECT, "/stats connections"),
    ],
)
async def test_the_fuzzer_catches_a_broken_server(
    make_server: MakeServer, fault: Fault, symptom: str
) -> None:
    """The verdict bites: a server with a deliberate bug fails the run."""
    server = await make_server(rate_limit=0, max_connections_per_ip=0, faults=frozenset({fault}))
    cfg = FuzzConfig(
        url=ws_url(server),
        seed=SEED,
        connections=2,
        frames=100,
        honest_interval=0.01,
        honest_pairs=2,
        # long enough for a loaded CI machine to connect, short for the timeouts it awaits
        reply_timeout=2.5,
        kinds=HEALTHY_KINDS,
    )
    report = await run_fuzz(cfg)
    assert not report.ok
    assert any(symptom in text for text in report.problems), report.problems


def test_frames_are_reproducible_from_the_seed_and_never_join() -> None:
    def frames(seed: int) -> list[tuple[str, tuple[bytes, ...]]]:
        source = FrameSource(random.Random(seed))
        return [
            (f.kind, tuple(w.payload for w in f.frames))
            for f in (source.next() for _ in range(300))
        ]

    assert frames(5) == frames(5)
    assert frames(5) != frames(6)
    source = FrameSource(random.Random(SEED))
    for _ in range(3000):
        frame = source.next()
        assert frame.error_codes or frame.close_codes, frame.kind
        assert not any(is_join(w.payload) for w in frame.frames)
        if frame.error_codes:
            assert frame.size <= p.MAX_FRAME_BYTES, (frame.kind, frame.size)


def test_every_kind_documents_its_answer() -> None:
    for kind in KINDS:
        source = FrameSource(random.Random(1), frozenset({kind}))
        frame = source.next()
        assert frame.kind == kind
        assert frame.error_codes <= {
            "invalid-json",
            "invalid-message",
            "unknown-type",
            "invalid-state",
        }
        assert frame.close_codes <= {1002, 1007, 1008, 1009}


def test_only_loopback_targets_without_allow_remote() -> None:
    assert is_loopback_url("ws://127.0.0.1:8080/ws")
    assert is_loopback_url("ws://[::1]:8080/ws")
    assert not is_loopback_url("ws://192.0.2.10/ws")  # TEST-NET-1, never contacted
    result = CliRunner().invoke(main, ["fuzz", "--url", "ws://192.0.2.10:80/ws", "--frames", "1"])
    assert result.exit_code == 2, result.output
    assert "loopback" in result.output


async def test_drift_fuzz_url_command(make_server: MakeServer, tmp_path: Path) -> None:
    """``drift fuzz --url`` end to end: progress, summary, JSON report, exit 0."""
    server = await make_server(rate_limit=0, max_connections_per_ip=0)
    out = tmp_path / "fuzz.json"
    args = ["fuzz", "--url", ws_url(server), "--seed", "3", "--frames", "300"]
    args += ["--connections", "3", "--bursts", "0", "--honest-interval", "0.02"]
    args += ["--report", str(out)]
    for kind in sorted(KNOWN_BUG_KINDS):
        args += ["--skip-kind", kind]
    # The command runs its own event loop; the server keeps serving on this one.
    result = await asyncio.to_thread(CliRunner().invoke, main, args)
    assert result.exit_code == 0, result.output
    assert "seed 3" in result.output and "PASS" in result.output
    report = json.loads(out.read_text())
    assert report["ok"] and report["frames_tried"] == 300
    assert set(report["kinds"]) <= HEALTHY_KINDS
    assert report["stats_after"]["connections"] == 0


async def test_drift_fuzz_fails_with_exit_1_on_a_broken_server(
    make_server: MakeServer, tmp_path: Path
) -> None:
    server = await make_server(
        rate_limit=0, max_connections_per_ip=0, faults=frozenset({Fault.DROP_CANDIDATES})
    )
    args = ["fuzz", "--url", ws_url(server), "--frames", "50", "--bursts", "0"]
    args += ["--honest-interval", "0.01", "--reply-timeout", "2.5", "--kind", "binary"]
    result = await asyncio.to_thread(CliRunner().invoke, main, args)
    assert result.exit_code == 1, result.output
    assert "FAIL" in result.output and "honest pair" in result.output


def test_embedded_run_watches_the_server_log() -> None:
    """``drift fuzz`` without ``--url``: its own loopback servers, log watched, exit 0."""
    args = ["fuzz", "--frames", "400", "--seed", "9", "--bursts", "1", "--burst-frames", "80"]
    for kind in sorted(KNOWN_BUG_KINDS):
        args += ["--skip-kind", kind]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "per-IP cap off" in result.output
    assert "no ERROR and no traceback" in result.output


def test_log_watch_keeps_errors_and_tracebacks_only() -> None:
    with LogWatch() as watch:
        logging.getLogger("drift.serve.server").warning("peer_abusive")
        logging.getLogger("aiohttp.server").error("Error handling request")
        try:
            raise RuntimeError("boom")
        except RuntimeError:
            logging.getLogger("asyncio").warning("task failed", exc_info=True)
        logging.getLogger("elsewhere").error("not the server's")
    assert [r.getMessage() for r in watch.records] == ["Error handling request", "task failed"]
