"""``drift simulate --network``: who connects, through what, with and without TURN.

Each test is one or two whole ``drift simulate`` runs in a real lab (one home
per peer, nftables NAT, coturn on the lab's internet); the ``simulate``
fixture checks afterwards that nothing of the lab remains.
"""

from __future__ import annotations

from typing import Any

import pytest

pytestmark = pytest.mark.slow


def all_pairings(net: dict[str, Any]) -> dict[str, Any]:
    assert net["pairings"], "the run produced no rooms"
    return dict(net["pairings"])


def test_cone_without_turn_connects_through_reflexive_candidates_never_host(simulate: Any) -> None:
    run = simulate("--network", "cone", "--no-turn", "--peers", "8")
    assert run.code == 0, run.stdout + run.stderr
    net = run.network
    assert net["turn"] is False
    for label, p in all_pairings(net).items():
        assert p["verified"] == p["rooms"], label
        assert p["paths"] == {"reflexive": p["rooms"]}, label
        # this side's pair: local host (the base of its srflx) or srflx, remote srflx/prflx
        for side in p["selected"]:
            local, remote = side.split("/")
            assert remote in ("srflx", "prflx"), side
            assert local != "relay", side


def test_symmetric_without_turn_fails_in_ice_with_exit_1(simulate: Any) -> None:
    run = simulate("--network", "symmetric", "--no-turn", "--peers", "8")
    assert run.code == 1, run.stdout + run.stderr
    net = run.network
    pairing = net["pairings"]["symmetric↔symmetric"]
    assert pairing["verified"] == 0
    # an ICE failure, never a signaling one: the server did its part
    assert set(pairing["failures"]) == {"ice-failed"}
    assert set(run.summary["failures"]) == {"ice-failed"}
    assert net["needed_turn"] == net["rooms"] == 4
    assert "symmetric↔symmetric" in net["failing_pairings"]
    assert "failing pairings: symmetric↔symmetric" in run.stdout


def test_symmetric_with_turn_verifies_every_pair_over_relay(simulate: Any) -> None:
    run = simulate("--network", "symmetric", "--peers", "8")
    assert run.code == 0, run.stdout + run.stderr
    pairing = run.network["pairings"]["symmetric↔symmetric"]
    assert pairing["verified"] == pairing["rooms"] == 4
    assert pairing["paths"] == {"relay": 4}
    assert sum(pairing["relay_transports"].values()) >= 4
    expectation = next(e for e in run.network["expectations"] if e["use"] == "relay")
    assert expectation["passed"] and expectation["rooms"] == 4


def test_udp_blocked_needs_turn_over_tcp_or_tls(simulate: Any) -> None:
    run = simulate("--network", "udp-blocked", "--peers", "8")
    assert run.code == 0, run.stdout + run.stderr
    pairing = run.network["pairings"]["udp-blocked↔udp-blocked"]
    assert pairing["verified"] == pairing["rooms"] == 4
    assert pairing["paths"] == {"relay": 4}
    transports = pairing["relay_transports"]
    assert set(transports) <= {"tcp", "tls"} and transports, transports
    assert set(transports) == {"tcp", "tls"}  # both TURN over TCP and over TLS carried pairs

    blocked = simulate(
        "--network", "udp-blocked", "--no-turn", "--peers", "4", "--timeout", "12",
        name="no-turn",
    )  # fmt: skip
    assert blocked.code == 1, blocked.stdout + blocked.stderr
    assert blocked.network["pairings"]["udp-blocked↔udp-blocked"]["verified"] == 0
    assert not set(blocked.summary["failures"]) & {"signaling-error", "swapped-roles"}


def test_lossy_verifies_and_reports_the_loss_applied(simulate: Any) -> None:
    run = simulate("--network", "lossy", "--peers", "8")
    assert run.code == 0, run.stdout + run.stderr
    net = run.network
    assert net["pairings"]["lossy↔lossy"]["verified"] == 4
    loss = net["loss"]["lossy"]
    assert loss["seen_up"] > 0 and loss["seen_down"] > 0
    assert loss["dropped_up"] + loss["dropped_down"] > 0, loss
    assert 0 < loss["applied_pct"] < 20
    assert "loss applied to lossy" in run.stdout


def test_mixed_population_passes_with_turn_and_names_failing_pairings_without(
    simulate: Any,
) -> None:
    run = simulate("--network", "mixed", "--peers", "200")
    assert run.code == 0, run.stdout + run.stderr
    net = run.network
    assert net["groups"]["cone"]["peers"] == 120 and net["groups"]["public"]["peers"] == 20
    assert all(p["verified"] == p["rooms"] for p in net["pairings"].values())
    assert all(e["passed"] for e in net["expectations"])
    html = (run.folder / "report.html").read_text()
    assert "Network: group × group" in html and "symmetric↔symmetric" in html
    junit = (run.folder / "junit.xml").read_text()
    assert "expect symmetric↔symmetric" in junit

    without = simulate("--network", "mixed", "--peers", "60", "--no-turn", name="no-turn")
    assert without.code == 1, without.stdout + without.stderr
    failing = without.network["failing_pairings"]
    assert "cone↔symmetric" in failing and "cone↔udp-blocked" in failing
    assert "cone↔cone" not in failing
    assert "failing pairings:" in without.stdout
    assert "<failure" in (without.folder / "junit.xml").read_text()
