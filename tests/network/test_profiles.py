"""Profiles: strict validation with the file and key named, and the shipped ones."""

from __future__ import annotations

from pathlib import Path

import pytest

from drift.netlab.profile import ProfileError, load_profile, parse_profile, shipped_names
from drift.netlab.router import router_script


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    return path


GOOD = '[[group]]\nname = "a"\nshare = 0.5\nnat = "cone"\n\n[[group]]\nname = "b"\nshare = 0.5\n'


@pytest.mark.parametrize(
    ("text", "key", "why"),
    [
        (GOOD.replace('nat = "cone"', 'nat = "cone"\nlatency = "4ms"'), "group[0].latency",
         "unknown key"),
        (GOOD.replace("share = 0.5\nnat", "share = 0.4\nnat"), "group.share", "sum to 0.9"),
        (GOOD.replace('nat = "cone"', 'nat = "full-cone"'), "group[0].nat", "unknown NAT type"),
        ('colour = "red"\n' + GOOD, "colour", "unknown key"),
        (GOOD + '[[expect]]\npairing = ["a", "c"]\n', "expect[0].pairing", "no group named 'c'"),
        (GOOD + 'rate = "fast"\n', "group[1].rate",
         "a rate like"),
    ],
)  # fmt: skip
def test_bad_profile_names_file_and_key(tmp_path: Path, text: str, key: str, why: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ProfileError) as caught:
        load_profile(str(path))
    message = str(caught.value)
    assert message.startswith(f"{path}: {key}: "), message
    assert why in message


def test_shipped_profiles_load_and_sum_to_one() -> None:
    assert set(shipped_names()) >= {"lan", "cone", "symmetric", "udp-blocked", "lossy", "mixed"}
    for name in shipped_names():
        profile = load_profile(name)
        assert abs(sum(g.share for g in profile.groups) - 1) < 1e-9


def test_mixed_is_a_realistic_population() -> None:
    groups = {g.name: g for g in load_profile("mixed").groups}
    assert {n: g.share for n, g in groups.items()} == {
        "cone": 0.6, "symmetric": 0.2, "udp-blocked": 0.1, "public": 0.1,
    }  # fmt: skip
    assert groups["symmetric"].nat == "symmetric"
    assert groups["udp-blocked"].firewall == "udp-blocked"
    assert groups["public"].nat == "none"


def test_assign_follows_shares_and_interleaves() -> None:
    profile = load_profile("mixed")
    order = [g.name for g in profile.assign(200)]
    assert order.count("cone") == 120 and order.count("symmetric") == 40
    assert order.count("udp-blocked") == 20 and order.count("public") == 20
    # interleaved: no long run of one group, so arrival order mixes pairings
    assert max(len(run) for run in "".join(n[0] for n in order).split("c")) <= 2


def test_router_rules_follow_the_group() -> None:
    base = {"name": "g", "share": 1.0}
    symmetric = parse_profile({"group": [{**base, "nat": "symmetric", "loss": 2.5}]},
                              source="x", name="x").groups[0]  # fmt: skip
    script = router_script(symmetric, service_ip="198.18.0.1", turn_tcp_ports=(3478, 5349))
    assert 'oifname "wan" masquerade random,fully-random' in script
    assert 'numgen random mod 10000 < 250 counter name "lost_up" drop' in script
    assert 'iifname "wan" ct state new drop' in script
    blocked = parse_profile({"group": [{**base, "firewall": "udp-blocked"}]},
                            source="x", name="x").groups[0]  # fmt: skip
    script = router_script(blocked, service_ip="198.18.0.1", turn_tcp_ports=(3478, 5349))
    assert 'oifname "wan" masquerade\n' in script
    assert "ip daddr 198.18.0.1 tcp dport { 3478, 5349 } accept" in script
    public = parse_profile({"group": [{**base, "nat": "none"}]}, source="x", name="x").groups[0]
    assert "masquerade" not in router_script(public, service_ip="198.18.0.1", turn_tcp_ports=())
