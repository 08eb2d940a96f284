"""Two cluster nodes whose I/O is interleaved as the real Redis backend allows.

tests/core/test_lobby_properties.py runs its model over two nodes, but settles
every queue script and node message at once, in one fixed order. A real node
does not: its join's result comes back on the worker's connection while
another node's ``paired`` message comes in on the pub/sub one, and nothing
orders the two. Here a hypothesis state machine chooses, step by step, which
pending piece of I/O happens next (:class:`~tests.support.cluster_harness.InterleavedCluster`),
between client frames, disconnects, clock ticks and Redis reconnects.

What must hold whatever the order is what a client can see, from docs/protocol.md:
each peer's frames follow the protocol's sequence (above all: ``matched`` as
answerer only after ``waiting``; ``queue-full`` and ``unavailable`` only for a
join not yet answered; relays only inside the receiver's room), and no node
refuses a pairing of a peer that is still in the wait the queue paired (which
its partner would see as ``matched`` then ``partner-left``). Once all I/O has
settled, the shared queue holds exactly the peers that were told they wait,
each room has one offerer and one answerer, and each node agrees with its peers.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from hypothesis import event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from drift.core import protocol as p
from drift.core.lobby import Close, Effect, LobbyConfig, Send
from tests.core.test_lobby_properties import InvariantViolation, profile, seeded
from tests.support.cluster_harness import NODES, PREFIX, InterleavedCluster

MAX_PEERS = 6
#: addresses that land on node A and on node B (the harness spreads by address)
ADDRS = {"A": "b", "B": "a"}

JOIN, NEXT, LEAVE = (p.encode_client(m) for m in (p.Join(), p.Next(), p.Leave()))


@dataclass
class Client:
    """One peer as its client sees the conversation, checked against docs/protocol.md."""

    id: str
    state: str = "idle"  # idle | queued | matched
    welcomed: bool = False
    #: in the current stint in the queue: `waiting` frames received, and
    #: `next` frames sent (each of which is owed one `waiting`)
    waits: int = 0
    nexts: int = 0
    room: str | None = None
    role: str | None = None
    #: the ticket of the join that started the current stint
    first_ticket: int = 0
    log: list[str] = field(default_factory=list)

    def answered(self) -> bool:
        """The join (or next from a room) that started this stint got its reply."""
        return self.waits > self.nexts

    def fail(self, why: str) -> InvariantViolation:
        return InvariantViolation(f"{self.id}: {why}; its conversation: {self.log}")


def _raw(send: Send) -> bytes:
    return send.data if isinstance(send.data, bytes) else send.data.encode()


class InterleavingMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.cluster: InterleavedCluster | None = None
        self.clients: dict[str, Client] = {}
        #: room id -> role -> peer, as the clients were told
        self.rooms: dict[str, dict[str, str]] = {}
        self.now = 1000.0
        self.next_peer = 0
        self.relays = 0
        self.blipped = False
        self.cooldown = 0.0

    redis_url = ""

    @initialize(
        cooldown=st.sampled_from([1.0, 1.0, 0.0]),
        queue_timeout=st.sampled_from([0.0, 0.0, 5.0]),
        max_queue=st.sampled_from([10_000, 10_000, 2]),
    )
    def configure(self, cooldown: float, queue_timeout: float, max_queue: int) -> None:
        self.cooldown = cooldown
        config = LobbyConfig(
            rematch_cooldown=cooldown,
            queue_timeout=queue_timeout,
            max_queue=max_queue,
            rate_limit=0.0,
            max_connections_per_ip=0,
        )
        counter = iter(range(1, 1 << 30))
        self.cluster = InterleavedCluster(self.redis_url, config, lambda: f"room{next(counter)}")

    def teardown(self) -> None:
        if self.cluster is not None:
            self.cluster.close()

    @property
    def c(self) -> InterleavedCluster:
        assert self.cluster is not None
        return self.cluster

    def _pick(self, data: st.DataObject, states: tuple[str, ...] | None = None) -> str:
        ids = sorted(
            pid for pid, cl in self.clients.items() if states is None or cl.state in states
        )
        return data.draw(st.sampled_from(ids), label="peer")

    # ------------------------------------------------------------ client rules

    @precondition(lambda self: len(self.clients) < MAX_PEERS)
    @rule(node=st.sampled_from(NODES), joins=st.booleans())
    def connect(self, node: str, joins: bool) -> None:
        self.next_peer += 1
        peer_id = f"p{self.next_peer}"
        self.clients[peer_id] = Client(peer_id)
        self._observe(self.c.connect(peer_id, self.now, ADDRS[node]))
        if joins:
            self._send(peer_id, JOIN)

    @precondition(lambda self: self.clients)
    @rule(data=st.data())
    def join(self, data: st.DataObject) -> None:
        self._send(self._pick(data), JOIN)

    @precondition(lambda self: self.clients)
    @rule(data=st.data())
    def next(self, data: st.DataObject) -> None:
        self._send(self._pick(data), NEXT)

    @precondition(lambda self: self.clients)
    @rule(data=st.data())
    def leave(self, data: st.DataObject) -> None:
        self._send(self._pick(data), LEAVE)

    @precondition(lambda self: any(cl.state == "matched" for cl in self.clients.values()))
    @rule(data=st.data())
    def relay(self, data: st.DataObject) -> None:
        peer_id = self._pick(data, ("matched",))
        client = self.clients[peer_id]
        self.relays += 1
        # The SDP names the sender and its room, so the receiver's side can be checked.
        tag = f"{peer_id}|{client.room}|{self.relays}"
        offer = p.Offer(sdp=p.SessionDescription(type="offer", sdp=tag))
        self._send(peer_id, p.encode_client(offer))

    @precondition(lambda self: any(cl.state == "matched" for cl in self.clients.values()))
    @rule(data=st.data(), wait_out=st.booleans())
    def skip_then_partner_rejoins(self, data: st.DataObject, wait_out: bool) -> None:
        """``next``; once the partner has heard, it joins again: the two wait in their
        cooldown, and when it ends (``wait_out``) both nodes ask the queue to look again
        at once, their retries left in flight for the I/O rules to order."""
        peer_id = self._pick(data, ("matched",))
        client = self.clients[peer_id]
        assert client.room is not None and client.role is not None
        members = self.rooms[client.room]
        partner = members.get("offerer" if client.role == "answerer" else "answerer")
        self._send(peer_id, NEXT)
        self._drain(data)
        if partner in self.clients and self.clients[partner].state == "idle":
            self._send(partner, JOIN)
            self._drain(data)
            if wait_out:
                self.clock(self.cooldown + 0.5)

    @precondition(lambda self: self.clients)
    @rule(data=st.data())
    def disconnect(self, data: st.DataObject) -> None:
        peer_id = self._pick(data)
        client = self.clients[peer_id]
        client.log.append("> (disconnect)")
        if client.state == "matched":
            self._end_room(client)
        self._observe(self.c.disconnect(peer_id, self.now))
        del self.clients[peer_id]

    @rule(delay=st.sampled_from([0.5, 1.0, 5.0]))
    def clock(self, delay: float) -> None:
        """Time passes; the ticker runs at every deadline (queue timeouts, cooldown ends)."""
        target = self.now + delay
        while (deadline := self.c.next_deadline()) is not None and deadline <= target:
            self.now = max(self.now, deadline)
            self._observe(self.c.tick(self.now))
        self.now = target
        self._observe(self.c.tick(self.now))

    @rule(node=st.sampled_from(NODES), first=st.booleans())
    def redis_blip(self, node: str, first: bool) -> None:
        """The node lost Redis for a moment (nothing was lost): it re-joins its waiting peers."""
        self.blipped = True
        self.c.rejoin(node, first=first)

    # ------------------------------------------------------------ I/O rules

    @precondition(lambda self: self.cluster is not None and not self.c.quiet())
    @rule(data=st.data())
    def io(self, data: st.DataObject) -> None:
        """One piece of pending I/O, in an order of hypothesis' choosing."""
        kind, node = data.draw(st.sampled_from(self.c.steps()), label="io")
        self._observe(self.c.step(kind, node))

    @precondition(lambda self: self.cluster is not None and not self.c.quiet())
    @rule(node=st.sampled_from(NODES), kind=st.sampled_from(["run", "deliver"]))
    def burst(self, node: str, kind: str) -> None:
        """A whole pipelined batch runs in Redis (results not read yet), or a node's
        whole inbox is delivered: the shapes in which results fall behind messages."""
        while (kind, node) in self.c.steps():
            self._observe(self.c.step(kind, node))

    @precondition(lambda self: self.cluster is not None)
    @rule(data=st.data())
    def settle(self, data: st.DataObject) -> None:
        """All pending I/O happens (in a drawn order); then the whole cluster is checked."""
        self._drain(data)
        self._check_settled()

    def _drain(self, data: st.DataObject) -> None:
        for _ in range(10_000):
            steps = self.c.steps()
            if not steps:
                return
            kind, node = data.draw(st.sampled_from(steps), label="io")
            self._observe(self.c.step(kind, node))
        raise InvariantViolation("the nodes never stop sending each other work")

    # ------------------------------------------------------------ the client's view

    def _send(self, peer_id: str, frame: bytes) -> None:
        client = self.clients[peer_id]
        kind = json.loads(frame)["type"]
        client.log.append(f"> {kind}")
        effects = self.c.receive(peer_id, frame, self.now)
        if kind == "join" and client.state == "idle":
            self._start_stint(client)
        elif kind == "next" and client.state == "matched":
            self._end_room(client)
            self._start_stint(client)
        if client.state == "queued" and not client.first_ticket:
            client.first_ticket = self.c.ticket_of(peer_id)
        elif kind == "next" and client.state == "queued":
            client.nexts += 1
        elif kind == "leave" and client.state == "queued":
            client.state = "idle"
        elif kind == "leave" and client.state == "matched":
            self._end_room(client)
            client.state = "idle"
        self._observe(effects)

    @staticmethod
    def _start_stint(client: Client) -> None:
        client.state, client.waits, client.nexts, client.first_ticket = "queued", 0, 0, 0

    def _end_room(self, client: Client) -> None:
        assert client.room is not None
        self.rooms.get(client.room, {}).pop(client.role or "", None)
        client.room = client.role = None

    def _observe(self, effects: list[Effect]) -> None:
        self._check_refusals()
        self._record(effects)

    def _check_refusals(self) -> None:
        """A node may refuse a pairing only for a wait that is over (left, or joined again).

        A refused pairing shows its other side ``matched`` then ``partner-left``; for a
        peer still in the very wait the queue paired, that is a room lost for nothing.
        After a Redis blip it is the documented price of re-joining everyone.
        """
        while self.c.refused:
            peer_id, ticket = self.c.refused.pop()
            client = self.clients.get(peer_id)
            if client is None or client.state != "queued" or self.blipped:
                continue
            if client.first_ticket and ticket >= client.first_ticket:
                raise client.fail(
                    f"its node refused a pairing of its current wait (ticket {ticket})"
                )

    def _record(self, effects: list[Effect]) -> None:
        told = [e.peer for e in effects if isinstance(e, Send) and b'"waiting"' in _raw(e)]
        if any(
            isinstance(e, Send) and b'"answerer"' in _raw(e) and e.peer in told for e in effects
        ):
            event("told waiting and matched as answerer at once (a paired message overtook)")
        for effect in effects:
            if isinstance(effect, Close):
                raise InvariantViolation(f"unexpected close: {effect}")
            if isinstance(effect, Send):
                client = self.clients.get(effect.peer)
                if client is None:
                    raise InvariantViolation(f"a frame for a peer that is gone: {effect}")
                text = effect.data.decode() if isinstance(effect.data, bytes) else effect.data
                client.log.append(f"< {text}")
                self._receive(client, json.loads(text))

    def _receive(self, client: Client, frame: dict[str, Any]) -> None:
        kind = frame["type"]
        if kind == "welcome":
            if client.welcomed:
                raise client.fail("welcome twice")
            client.welcomed = True
            return
        if not client.welcomed:
            raise client.fail(f"{kind} before welcome")
        if kind == "waiting":
            if client.state != "queued":
                raise client.fail(f"waiting while {client.state}")
            client.waits += 1
        elif kind == "matched":
            role, room = frame["role"], frame["roomId"]
            if client.state != "queued":
                raise client.fail(f"matched while {client.state}")
            if role == "answerer" and client.waits == 0:
                raise client.fail("matched as answerer without ever being told waiting")
            members = self.rooms.setdefault(room, {})
            if role in members:
                raise client.fail(f"{room} has two {role}s: {members[role]} and {client.id}")
            members[role] = client.id
            client.state, client.room, client.role = "matched", room, role
        elif kind == "partner-left":
            if client.state != "matched":
                raise client.fail(f"partner-left while {client.state}")
            self._end_room(client)
            client.state = "idle"
        elif kind == "offer":
            sender, room, _ = frame["sdp"]["sdp"].split("|")
            if client.state != "matched" or room != client.room or sender == client.id:
                raise client.fail(f"a relay from {sender} in {room} while {client.state}")
        elif kind == "error":
            code = frame["code"]
            if code in ("queue-full", "unavailable"):
                if client.state != "queued" or client.answered():
                    raise client.fail(f"{code} for a join already answered")
                client.state = "idle"
            elif code == "queue-timeout":
                # "nobody compatible came in time": also a fair answer to a join
                # whose result Redis took longer than the timeout to give.
                if client.state != "queued":
                    raise client.fail(f"queue-timeout while {client.state}")
                client.state = "idle"
            elif code != "invalid-state":
                raise client.fail(f"unexpected error {code}")
        else:
            raise client.fail(f"unexpected frame {frame}")

    # ------------------------------------------------------------ once all is quiet

    def _check_settled(self) -> None:
        cluster = self.c
        queued = {pid for pid, cl in self.clients.items() if cl.state == "queued"}
        for pid in sorted(queued):
            if not self.clients[pid].answered():
                raise self.clients[pid].fail("its join was never answered")
        shared = cluster.shared_queue()
        if len(shared) != len(set(shared)) or set(shared) != queued:
            raise InvariantViolation(
                f"the shared queue holds {shared}, the clients told they wait are {sorted(queued)}"
            )
        held = set(cluster.redis.hkeys(PREFIX + "peers"))
        if held != queued:
            raise InvariantViolation(f"the peers hash holds {sorted(held)}, not {sorted(queued)}")
        for room, members in self.rooms.items():
            if members and set(members) != {"offerer", "answerer"}:
                raise InvariantViolation(f"{room} has only {members}")
        for pid, client in self.clients.items():
            node = cluster.lobby_of(pid)
            state = node.state_of(pid)
            expected = {"idle": "idle", "queued": "waiting", "matched": "matched"}[client.state]
            if state is None or state.value != expected:
                raise client.fail(f"node {node.node} has it {state}, the client is {client.state}")

    @invariant()
    def rooms_hold_two_at_most(self) -> None:
        for room, members in self.rooms.items():
            for role, pid in members.items():
                client = self.clients.get(pid)
                if client is not None and (client.room, client.role) != (room, role):
                    raise client.fail(f"listed as {role} of {room}")


def test_every_interleaving_keeps_the_protocol_order(redis_url: str) -> None:
    machine = seeded(type("InterleavingMachine", (InterleavingMachine,), {"redis_url": redis_url}))
    budget = profile()
    # The overtaking orders need a few hundred runs to come up; each run is cheap.
    budget = settings(budget, max_examples=max(300, budget.max_examples))
    run_state_machine_as_test(machine, settings=budget)  # type: ignore[arg-type]


def _frames(effects: list[Effect]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for effect in effects:
        if isinstance(effect, Send):
            out.setdefault(effect.peer, []).append(json.loads(effect.data))
    return out


def test_a_paired_message_that_overtakes_the_join_result(redis_url: str) -> None:
    """The order of the bug report: x's join has run in Redis, y's join on the other node
    pops x, and y's ``paired`` reaches x's node before x's own join result does."""
    config = LobbyConfig(rate_limit=0.0, max_connections_per_ip=0)
    cluster = InterleavedCluster(redis_url, config, iter(["room1", "room2"]).__next__)
    try:
        cluster.connect("x", 0.0, ADDRS["A"])
        cluster.connect("y", 0.0, ADDRS["B"])
        cluster.receive("x", JOIN, 0.0)
        cluster.step("run", "A")  # x's join runs: x is queued; its result is on its way
        cluster.receive("y", JOIN, 0.0)
        cluster.step("run", "B")  # y's join pops x
        at_b = _frames(cluster.step("result", "B"))
        assert at_b == {"y": [{"type": "matched", "role": "offerer", "roomId": "room1"}]}
        cluster.step("run", "B")  # the paired message is published
        at_a = _frames(cluster.step("deliver", "A"))  # ...and overtakes x's join result
        assert at_a == {
            "x": [{"type": "waiting"}, {"type": "matched", "role": "answerer", "roomId": "room1"}]
        }
        assert _frames(cluster.step("result", "A")) == {}  # the late `waiting` says nothing more
        assert cluster.quiet()
        assert cluster.shared_queue() == []
    finally:
        cluster.close()


def test_both_retries_at_cooldown_end_pair_the_two(redis_url: str) -> None:
    """x and y wait in their cooldown, on two nodes; when it ends both ask the queue to
    look again. The first retry pairs them; the second finds its entry gone, and its
    result may come back before the pairing's message: the pairing must still stand."""
    config = LobbyConfig(rate_limit=0.0, max_connections_per_ip=0, rematch_cooldown=1.0)
    cluster = InterleavedCluster(redis_url, config, iter(["room1", "room2"]).__next__)
    frames: dict[str, list[dict[str, Any]]] = {}

    def run(*steps: tuple[str, str]) -> None:
        for kind, node in steps:
            for peer, got in _frames(cluster.step(kind, node)).items():
                frames.setdefault(peer, []).extend(got)

    def drain() -> None:
        while steps := cluster.steps():
            run(steps[0])

    try:
        cluster.connect("x", 0.0, ADDRS["A"])
        cluster.connect("y", 0.0, ADDRS["B"])
        cluster.receive("x", JOIN, 0.0)
        drain()
        cluster.receive("y", JOIN, 0.0)
        drain()
        cluster.receive("y", NEXT, 0.0)  # y waits again, in its cooldown with x
        drain()
        cluster.receive("x", JOIN, 0.0)
        drain()
        frames.clear()
        assert cluster.tick(2.0) == []  # both cooldowns end: a retry on each node
        run(("run", "A"), ("run", "B"))  # x's retry pairs the two; y's finds nothing
        run(("result", "B"), ("result", "A"))  # y's `gone` first, then x's match
        drain()
        assert frames == {
            "x": [{"type": "matched", "role": "offerer", "roomId": "room2"}],
            "y": [{"type": "matched", "role": "answerer", "roomId": "room2"}],
        }
        assert cluster.shared_queue() == []
    finally:
        cluster.close()
