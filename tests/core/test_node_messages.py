"""The typed vocabulary between cluster nodes: one encoding, validated in one decode."""

from __future__ import annotations

import pytest

from drift.core import node_messages as nm

MESSAGES: list[nm.NodeMessage] = [
    nm.Paired("x", 7, "y", "node-b", "room1", "waited"),
    nm.Relay("x", "y", "room1", '{"type":"offer","sdp":{"type":"offer","sdp":"v=0\\r\\n"}}'),
    nm.Left("x", "y", "room1", "next"),
    nm.Requeue("x", 7),
]


@pytest.mark.parametrize("message", MESSAGES, ids=lambda m: type(m).__name__)
def test_every_message_survives_the_trip_between_nodes(message: nm.NodeMessage) -> None:
    data = nm.encode(message)
    assert data.startswith(b'["')  # a compact array, tag first
    assert nm.decode(data) == message
    assert nm.decode(data.decode()) == message


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"not json",
        b'["paired","x",7,"y","node-b","room1"]',  # a field short
        b'["paired","x","7","y","node-b","room1","waited"]',  # ticket not a number
        b'["paired","x",7,"y","node-b","room1","both"]',  # no such part
        b'["left","x","y","room1","bored"]',  # no such reason
        b'["hello","x"]',  # no such message
        b'{"type":"left"}',
    ],
)
def test_anything_else_on_the_channel_is_not_a_message(data: bytes) -> None:
    assert nm.decode(data) is None


@pytest.mark.parametrize(
    ("reply", "result"),
    [
        (["waiting"], nm.WAITING),
        (["full"], nm.FULL),
        (["gone"], nm.GONE),
        (["matched", "x", "node-a", "12", "newcomer"], nm.Matched("x", "node-a", 12, "newcomer")),
        (["matched", "x", "node-a", "3", "waited"], nm.Matched("x", "node-a", 3, "waited")),
        (None, nm.UNAVAILABLE),
        ([], nm.UNAVAILABLE),
        (["matched", "x", "node-a", "newcomer"], nm.UNAVAILABLE),  # no ticket
        (["matched", "x", "node-a", "12", "sideways"], nm.UNAVAILABLE),
        (["matched", "x", "node-a", "twelve", "waited"], nm.UNAVAILABLE),
        (["what"], nm.UNAVAILABLE),
    ],
)
def test_queue_script_replies_are_typed_once(reply: list[str] | None, result: object) -> None:
    assert nm.queue_result(reply) == result
