"""The lab is sealed and leaves nothing behind: host untouched, cleanup on every exit path."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from drift.harness.waiting import wait_until
from drift.netlab import namespaces as ns
from drift.netlab.lab import NetworkLab
from drift.netlab.profile import parse_profile
from drift.netlab.seat import install
from tests.network.conftest import REPO, RUN_TIMEOUT, lab_processes, leftovers, simulate_argv
from tests.network.harness import connect_pair

pytestmark = pytest.mark.slow


def host_state() -> dict[str, Any]:
    """This namespace's links, addresses, routes and ruleset (the test's own "host")."""

    def ip(*args: str) -> Any:
        out = subprocess.run(["ip", "-j", *args], capture_output=True, text=True, check=True)
        return json.loads(out.stdout or "[]")

    links = ip("-s", "link", "show")
    ruleset = subprocess.run(["nft", "list", "ruleset"], capture_output=True, text=True, check=True)
    return {
        "links": sorted((k["ifname"], k["operstate"], k.get("address")) for k in links),
        "addresses": sorted(
            (a["ifname"], i["local"], i["prefixlen"]) for a in ip("addr") for i in a["addr_info"]
        ),
        "routes": sorted(json.dumps(r, sort_keys=True) for r in ip("route", "list", "table", "0")),
        "ruleset": ruleset.stdout,
        "tx": {k["ifname"]: k["stats64"]["tx"]["packets"] for k in links},
    }  # fmt: skip


def wait_for(condition: Callable[[], bool], proc: subprocess.Popen[Any], what: str) -> None:
    """Poll a real condition (the lab's namespaces, coturn) while the run lives."""
    wait_until(lambda: proc.poll() is not None or condition(), RUN_TIMEOUT, what=what)
    assert proc.poll() is None, f"the run ended before {what}: {proc.communicate()}"


def lab_up(pid: int) -> bool:
    """Namespaces exist and coturn runs: the lab is built."""
    return bool(lab_processes(pid)) and any(
        ns.owner_pid(n) == pid for n in ns.list_drift_namespaces()
    )


def start(folder: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        simulate_argv(folder, *args), cwd=REPO, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def test_host_interfaces_routes_and_ruleset_unchanged_during_and_after(tmp_path: Path) -> None:
    before = host_state()
    # --hold keeps the verified pairs up for a while: the lab is observed mid-run
    proc = start(tmp_path / "run", "--network", "symmetric", "--peers", "8", "--hold", "3")
    try:
        wait_for(lambda: lab_up(proc.pid), proc, "lab")
        during = host_state()
        out, err = proc.communicate(timeout=RUN_TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, out + err
    after = host_state()
    for key in ("links", "addresses", "routes", "ruleset"):
        assert during[key] == before[key], key
        assert after[key] == before[key], key
    if set(before["tx"]) == {"lo"}:
        # the loopback-only namespace of the test suite: nothing but this test uses its
        # loopback, and the whole run (server, coturn, peers) stayed inside the lab
        assert after["tx"] == before["tx"]
    assert leftovers(proc.pid) == []


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_sigterm_and_ctrl_c_remove_the_lab(tmp_path: Path, signum: int) -> None:
    proc = start(tmp_path / "run", "--network", "symmetric", "--no-turn", "--peers", "8")
    try:
        wait_for(lambda: lab_up(proc.pid), proc, "lab")
        proc.send_signal(signum)
        proc.communicate(timeout=RUN_TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode != 0
    assert leftovers(proc.pid) == []


def test_a_new_run_removes_what_a_sigkilled_run_left(tmp_path: Path, simulate: Any) -> None:
    proc = start(tmp_path / "killed", "--network", "symmetric", "--no-turn", "--peers", "8")
    try:
        wait_for(lambda: lab_up(proc.pid), proc, "lab")
        proc.kill()  # SIGKILL: no cleanup can run
        proc.communicate(timeout=RUN_TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    left = leftovers(proc.pid)
    assert any(name.startswith(f"drift-{proc.pid}-") for name in left), left
    assert lab_processes(proc.pid), "coturn of the killed run should still be running"

    run = simulate("--network", "lan", "--peers", "2")
    assert run.code == 0, run.stdout + run.stderr
    assert leftovers(proc.pid) == []


def test_missing_tools_exit_2_naming_them(tmp_path: Path) -> None:
    env = {**os.environ, "PATH": str(tmp_path)}  # nft, ip, tc, turnserver: none on this PATH
    done = subprocess.run(
        simulate_argv(tmp_path / "r", "--network", "cone", "--peers", "2"),
        cwd=REPO, env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    for needed in ("`nft` from nftables", "`turnserver` from coturn", "iproute2"):
        assert needed in done.stderr
    assert done.stderr.count("\n") == 1  # one readable line, no traceback


def test_bad_profile_exits_2_naming_file_and_key(tmp_path: Path) -> None:
    path = tmp_path / "typo.toml"
    path.write_text('[[group]]\nname = "g"\nshare = 1.0\nnat = "full-cone"\n')
    done = subprocess.run(
        simulate_argv(tmp_path / "r", "--network", str(path), "--peers", "2"),
        cwd=REPO, capture_output=True, text=True, timeout=RUN_TIMEOUT,
    )  # fmt: skip
    assert done.returncode == 2
    assert f"{path}: group[0].nat: unknown NAT type 'full-cone'" in done.stderr


def test_delay_needs_netem_or_is_refused(tmp_path: Path, simulate: Any) -> None:
    path = tmp_path / "slow.toml"
    path.write_text('[[group]]\nname = "g"\nshare = 1.0\ndelay = "20ms"\njitter = "5ms"\n')
    run = simulate("--network", str(path), "--peers", "2")
    if run.code == 2:  # this kernel has no netem: refused, never silently ignored
        assert "netem" in run.stderr and str(path) in run.stderr
    else:
        assert run.code == 0, run.stdout + run.stderr
        connect = run.network["pairings"]["g↔g"]["matched_to_connected_ms"]
        assert connect["p50"] >= 40  # at least one delayed round trip


def test_the_lab_alone_connects_two_cone_homes_directly(tmp_path: Path) -> None:
    """Two aiortc peers in two homes, signaled in memory: the lab without drift serve."""
    profile = parse_profile(
        {"group": [{"name": "c", "share": 1.0, "nat": "cone"}]}, source="t", name="t"
    )
    with NetworkLab(profile, 2, turn=False) as lab:
        assert lab.coturn is not None
        install(str(lab.coturn.cert))
        with lab.entered():
            result = asyncio.run(connect_pair(lab, 0, 1, timeout=15))
        name = lab.internet
    assert result.connected, result
    assert result.offerer is not None and result.offerer[1] in ("srflx", "prflx")
    assert name not in ns.list_drift_namespaces()
    assert leftovers(os.getpid()) == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--no-turn"], "--no-turn applies to --network runs only"),
        (["--network", "cone", "--url", "ws://127.0.0.1:9/ws"], "cannot be combined with --url"),
        (["--network", "no-such-profile"], "no shipped profile 'no-such-profile'"),
    ],
)
def test_bad_network_flags_exit_2(tmp_path: Path, args: list[str], message: str) -> None:
    done = subprocess.run(
        simulate_argv(tmp_path / "r", "--peers", "2", *args),
        cwd=REPO, capture_output=True, text=True, timeout=RUN_TIMEOUT,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert message in done.stderr


def test_rate_is_a_tbf_qdisc_on_both_router_links() -> None:
    profile = parse_profile(
        {"group": [{"name": "dsl", "share": 1.0, "rate": "2mbit"}]}, source="t", name="t"
    )
    with NetworkLab(profile, 1, turn=False) as lab:
        router = lab.seat(0).home[: -len("h0")] + "r0"
        shown = subprocess.run(
            ["ip", "netns", "exec", router, "tc", "qdisc", "show"],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
    tbf = [line for line in shown.splitlines() if line.startswith("qdisc tbf")]
    assert len(tbf) == 2 and all("rate 2Mbit" in line for line in tbf), shown
