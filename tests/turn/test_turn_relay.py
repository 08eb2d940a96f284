"""The TURN relay path end to end, with a real coturn on loopback (``use-auth-secret``).

Relay-only synthetic peers (``--ice-policy relay``) must verify through coturn
and the report must prove every pair used relay candidates; every way TURN can
break must come out as its own failure kind; ``drift turn-check`` must say
in one line what is wrong. coturn missing: a failure in CI, a skip elsewhere.
"""

from __future__ import annotations

import csv
import json
import os
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from rich.console import Console

from drift.client.urls import ws_url
from drift.errors import ConfigError
from drift.exitcodes import ExitCode
from drift.harness.coturn import Coturn
from drift.harness.ports import free_port
from drift.simulate.embedded import EmbeddedServer
from drift.simulate.records import Failure, PeerRecord, RoundRecord
from drift.simulate.run import Settings, SimulateResult, simulate_run
from drift.simulate.sdp import candidate_types
from drift.simulate.verify import classify
from tests.conftest import MakeServer
from tests.support.coturn import SECRET, run_coturn

#: Per-pair timeout of the runs: generous, the machine is shared (a pair takes < 1 s).
PAIR_TIMEOUT = 20.0


@pytest.fixture(scope="module")
def turn() -> Iterator[Coturn]:
    # one relay port per allocation: 10 peers per run, a few runs, plus margin
    with run_coturn(relay_ports=64) as server:
        yield server


async def run(tmp_path: Path, **settings: object) -> SimulateResult:
    base: dict[str, object] = {
        "peers": 2,
        "media_fraction": 0.0,
        "timeout": PAIR_TIMEOUT,
        "live": False,
        "report_dir": tmp_path,
        "ice_policy": "relay",
    }
    return await simulate_run(Settings(**{**base, **settings}), Console(quiet=True))  # type: ignore[arg-type]


def failure_kinds(result: SimulateResult) -> dict[str, int]:
    failures = result.summary["failures"]
    assert isinstance(failures, dict)
    return failures


async def test_relay_only_pairs_verify_and_the_report_proves_relay(
    turn: Coturn, tmp_path: Path
) -> None:
    result = await run(
        tmp_path, peers=10, turn_urls=(turn.url,), turn_secret=SECRET, media_fraction=0.2
    )
    summary = result.summary
    assert result.exit_code == ExitCode.OK, summary["failures"]
    assert summary["verified_pairs"] == 5
    cands = summary["candidate_pairs"]
    # every connected side: its own candidate of the selected pair is a relay one
    assert cands["local_types"] == {"host": 0, "srflx": 0, "prflx": 0, "relay": 10}
    # the remote side is the partner's relay (prflx if its check beat its trickled candidate)
    assert sum(cands["pairs"].values()) == 10
    assert set(cands["pairs"]) <= {"relay/relay", "relay/prflx"}, cands["pairs"]
    assert cands["relayed_rooms"] == 5 and cands["unknown"] == 0
    assert summary["ice_policy"] == "relay"
    # ...and the files say so per pair, without the secret
    text = (tmp_path / "summary.json").read_text()
    assert SECRET not in text and json.loads(text)["candidate_pairs"]["relayed_rooms"] == 5
    rows = peers_rows(tmp_path)
    assert [r["selected_local_type"] for r in rows] == ["relay"] * 10
    assert all(r["local_candidate_types"] == "relay" for r in rows)
    junit = (tmp_path / "junit.xml").read_text()
    assert len(re.findall(r"\[relay/\w+, relay/\w+\]", junit)) == 5


async def test_policy_all_counts_pairs_and_requires_nothing_of_them(
    turn: Coturn, tmp_path: Path
) -> None:
    """Policy all: types are reported, never a failure (aioice may nominate a relay pair
    even on one machine: it nominates the first pair whose check succeeds)."""
    turn_settings = {"turn_urls": (turn.url,), "turn_secret": SECRET}
    result = await run(tmp_path / "turn", peers=4, ice_policy="all", **turn_settings)
    assert result.exit_code == ExitCode.OK, result.summary["failures"]
    pairs = result.summary["candidate_pairs"]["pairs"]
    assert sum(pairs.values()) == 4
    assert set(pairs) <= {"host/host", "host/relay", "relay/host", "relay/relay"}
    # without TURN in welcome there is nothing but host candidates on loopback
    result = await run(tmp_path / "none", peers=4, ice_policy="all")
    assert result.exit_code == ExitCode.OK, result.summary["failures"]
    assert result.summary["candidate_pairs"]["pairs"] == {"host/host": 4}
    assert result.summary["candidate_pairs"]["relayed_rooms"] == 0


def test_wrong_secret_fails_with_credentials_rejected(turn: Coturn, tmp_path: Path) -> None:
    """Through the command line: flags, DRIFT_TURN_SECRET, exit code, summary, one reason."""
    env = {**os.environ, "DRIFT_TURN_SECRET": "not-" + SECRET}
    argv = ["simulate", "--peers", "4", "--ice-policy", "relay", "--turn-url", turn.url]
    argv += ["--media-fraction", "0", "--no-live", "--report-dir", str(tmp_path)]
    done = drift(*argv, env=env)
    assert done.returncode == ExitCode.CHECK_FAILED, done.stdout + done.stderr
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["failures"] == {Failure.TURN_AUTH_REJECTED.value: 4}
    assert "static-auth-secret" in summary["failure_examples"][Failure.TURN_AUTH_REJECTED.value]
    assert "turn-auth-rejected, e.g.:" in done.stdout
    assert "not-" + SECRET not in (tmp_path / "summary.json").read_text() + done.stdout


async def test_expired_credentials_fail_with_credentials_rejected(
    turn: Coturn, make_server: MakeServer, tmp_path: Path
) -> None:
    # A negative TTL (the CLI refuses it; ServerConfig is the test hook) hands out
    # credentials whose expiry passed a minute ago: deterministic, no waiting.
    server = await make_server(
        turn_urls=(turn.url,), turn_secret=SECRET, turn_ttl=-60, max_connections_per_ip=0
    )
    url = ws_url(server.url)
    result = await run(tmp_path, peers=2, urls=(url,))
    assert result.exit_code == ExitCode.CHECK_FAILED
    assert failure_kinds(result) == {Failure.TURN_AUTH_REJECTED.value: 2}
    details = {r["failure_detail"] for r in peers_rows(tmp_path)}
    assert any("expired" in d for d in details), details


async def test_unreachable_turn_is_its_own_kind(tmp_path: Path) -> None:
    nowhere = f"turn:127.0.0.1:{free_port(udp=True)}?transport=udp"  # nothing listens there
    result = await run(tmp_path, peers=2, turn_urls=(nowhere,), turn_secret=SECRET)
    assert result.exit_code == ExitCode.CHECK_FAILED
    assert failure_kinds(result) == {Failure.TURN_UNREACHABLE.value: 2}


async def test_refused_allocation_is_its_own_kind(tmp_path: Path) -> None:
    # coturn with a single relay port, held by this test: no allocation can succeed
    with run_coturn(relay_ports=1) as full, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as hog:
        hog.bind(("127.0.0.1", full.relay[0]))
        result = await run(tmp_path, peers=2, turn_urls=(full.url,), turn_secret=SECRET)
    assert result.exit_code == ExitCode.CHECK_FAILED
    assert failure_kinds(result) == {Failure.TURN_ALLOCATION_REFUSED.value: 2}


async def test_relay_policy_without_turn_in_welcome_stops_before_the_run(
    make_server: MakeServer, tmp_path: Path
) -> None:
    server = await make_server(max_connections_per_ip=0)  # no --turn-url
    url = ws_url(server.url)
    with pytest.raises(ConfigError, match="no TURN server"):
        await run(tmp_path, peers=2, urls=(url,))


def test_candidate_types_are_read_once_per_type_from_a_bundled_sdp() -> None:
    line = "a=candidate:1 1 udp {} 127.0.0.1 {} typ {}"
    sdp = "\r\n".join(
        [
            "v=0",
            "m=video 9 UDP/TLS/RTP/SAVPF 96",
            line.format(100, 5000, "relay") + " raddr 0.0.0.0 rport 9",
            "m=application 9 UDP/DTLS/SCTP webrtc-datachannel",
            line.format(100, 5000, "relay") + " raddr 0.0.0.0 rport 9",
            line.format(200, 5001, "host"),
        ]
    )
    assert candidate_types(sdp) == ["relay", "host"]


def test_the_embedded_server_gets_the_secret_through_its_environment_only() -> None:
    server = EmbeddedServer(peers=2, turn_urls=("turn:127.0.0.1:3478",), turn_secret="s3cret")
    argv = server.argv()
    assert "s3cret" not in " ".join(argv)
    assert argv[argv.index("--turn-url") + 1] == "turn:127.0.0.1:3478"


def test_a_relay_run_connected_without_relay_is_not_relayed() -> None:
    """The verdict itself: connected on host/host under relay policy is a failure."""
    records = []
    for i, role in enumerate(("offerer", "answerer")):
        rnd = RoundRecord(number=1, t_join=0.0, t_matched=0.1, role=role, room_id="r")
        rnd.t_connected, rnd.verified, rnd.partner_ok, rnd.rtt_ms = 0.5, True, True, 1.0
        rnd.hello_peer, rnd.hello_room = f"p{1 - i}", "r"
        rnd.selected_local_type, rnd.selected_remote_type = "host", "host"
        rec = PeerRecord(index=i, url="ws://x", t_start=0.0, peer_id=f"p{i}", rounds=[rnd])
        records.append(rec)
    assert classify(records, ice_policy="all").failed == 0
    verdict = classify(records, ice_policy="relay")
    assert verdict.failures == {Failure.NOT_RELAYED.value: 2}
    assert "host/host" in (records[0].failure_detail or "")


# ---------------------------------------------------------------------- turn-check


def drift(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "drift", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=env,
    )


def turn_check(*args: str) -> subprocess.CompletedProcess[str]:
    return drift("turn-check", *args)


def test_turn_check_allocates_with_fresh_credentials(turn: Coturn) -> None:
    done = turn_check("--url", turn.url, "--secret", SECRET)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"ok {turn.url}: relayed address 127.0.0.1:")
    low, high = turn.relay
    port = int(done.stdout.split("relayed address 127.0.0.1:")[1].split(",")[0])
    assert low <= port <= high


def test_turn_check_names_a_wrong_secret_in_one_line(turn: Coturn) -> None:
    done = turn_check("--url", turn.url, "--secret", "wrong")
    assert done.returncode == ExitCode.CHECK_FAILED
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "turn-auth-rejected" in lines[0] and "static-auth-secret" in lines[0]


def test_turn_check_names_an_unreachable_server_in_one_line() -> None:
    url = f"turn:127.0.0.1:{free_port(udp=True)}"
    done = turn_check("--url", url, "--secret", SECRET, "--timeout", "10")
    assert done.returncode == ExitCode.UNREACHABLE
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "turn-unreachable" in lines[0] and "127.0.0.1" in lines[0]


def peers_rows(folder: Path) -> list[dict[str, str]]:
    with (folder / "peers.csv").open(encoding="utf-8") as f:
        return list(csv.DictReader(f))
