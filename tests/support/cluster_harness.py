"""Two cluster nodes over a real redis-server, driven synchronously like one Lobby.

The property tests' state machine drives a core through ``connect`` /
``receive`` / ``disconnect`` / ``tick`` and reads its state back. This harness
gives it the Redis backend behind that same interface: two
:class:`~drift.core.cluster.ClusterLobby` nodes, peers spread over them by address
(so per-address caps hold per node, as in production behind a balancer that
keeps an address on one node), and every ``QueueOp`` run through the very Lua
scripts of :mod:`drift.serve.redis_backend` on a real Redis, every ``Forward``
delivered to the other node's core, until nothing is left to do. What comes
out is what a single lobby would have sent.

Only the clock is simulated: the state machine's clock jumps, so the
rematch-cooldown keys are written without a TTL and deleted here when the
simulated time passes their end, and node presence keys never expire.
"""

from __future__ import annotations

from collections import deque
from typing import Any

import redis

from drift.core import node_messages
from drift.core import protocol as p
from drift.core.cluster import ClusterLobby
from drift.core.lobby import (
    Close,
    Cooldown,
    Effect,
    Event,
    Fault,
    Forward,
    LobbyConfig,
    QueueOp,
    Send,
)
from drift.serve.redis_backend import QUEUE_SCRIPTS, queue_keys, queue_op_args

PREFIX = "drift:"
NODES = ("A", "B")


class RedisCluster:
    def __init__(self, url: str, config: LobbyConfig, new_room_id: Any) -> None:
        self.config = config
        self.redis = redis.Redis.from_url(url, decode_responses=True)
        self.redis.flushall()
        self.nodes = {name: ClusterLobby(name, config, new_room_id) for name in NODES}
        self.scripts = {op: self.redis.register_script(src) for op, src in QUEUE_SCRIPTS.items()}
        self.never = "1" if Fault.NEVER_MATCH in config.faults else "0"
        self.home: dict[str, str] = {}  # peer -> node
        self.cooling: dict[str, float] = {}  # Redis cooldown key -> simulated end
        self.now = 0.0
        for name in NODES:
            self.redis.set(PREFIX + "node:" + name, "{}")

    def close(self) -> None:
        self.redis.close()

    # ------------------------------------------------------------ the Lobby interface

    def node_for(self, addr: str) -> ClusterLobby:
        return self.nodes[NODES[sum(addr.encode()) % len(NODES)]]

    def connect(
        self, peer_id: str, now: float, addr: str = "", ice_servers: list[p.IceServer] | None = None
    ) -> list[Effect]:
        node = self.node_for(addr)
        out = node.connect(peer_id, self._at(now), addr, ice_servers)
        if peer_id in node.peers:
            self.home[peer_id] = node.node
        return self._settle(node, out)

    def receive(self, peer_id: str, frame: bytes | str | None, now: float) -> list[Effect]:
        node = self._node_of(peer_id)
        return self._settle(node, node.receive(peer_id, frame, self._at(now)))

    def receive_binary(self, peer_id: str, now: float) -> list[Effect]:
        return self.receive(peer_id, None, now)

    def disconnect(self, peer_id: str, now: float, reason: Any = "disconnected") -> list[Effect]:
        node = self._node_of(peer_id)
        out = self._settle(node, node.disconnect(peer_id, self._at(now), reason))
        if peer_id not in node.peers:
            self.home.pop(peer_id, None)
        return out

    def tick(self, now: float) -> list[Effect]:
        now = self._at(now)
        out: list[Effect] = []
        for node in self.nodes.values():
            out += self._settle(node, node.tick(now))
        return out

    def next_deadline(self) -> float | None:
        deadlines = [d for n in self.nodes.values() if (d := n.next_deadline()) is not None]
        return min(deadlines) if deadlines else None

    # ------------------------------------------------------------ state for the invariants

    def shared_queue(self) -> list[str]:
        return list(self.redis.lrange(PREFIX + "queue", 0, -1))

    def lobby_of(self, peer_id: str) -> ClusterLobby:
        return self._node_of(peer_id)

    # ------------------------------------------------------------ plumbing

    def _node_of(self, peer_id: str) -> ClusterLobby:
        return self.nodes[self.home.get(peer_id, NODES[0])]

    def _at(self, now: float) -> float:
        """Advance the simulated clock; cooldown keys whose end has passed go."""
        self.now = max(self.now, now)
        for key, end in list(self.cooling.items()):
            if end <= self.now:
                self.redis.delete(key)
                del self.cooling[key]
        return now

    def _settle(self, origin: ClusterLobby, effects: list[Effect]) -> list[Effect]:
        """Carry out queue operations and node-to-node messages until all is quiet."""
        out: list[Effect] = []
        todo: deque[tuple[ClusterLobby, Effect]] = deque((origin, e) for e in effects)
        while todo:
            node, effect = todo.popleft()
            if isinstance(effect, Send | Close | Event):
                out.append(effect)
            elif isinstance(effect, QueueOp):
                result = self.run_script(node, effect)
                if result is not None:
                    todo.extend((node, e) for e in node.queue_result(effect, result, self.now))
            elif isinstance(effect, Forward):
                target = self.nodes[effect.node]
                todo.extend((target, e) for e in target.deliver(self.carry(effect), self.now))
            elif isinstance(effect, Cooldown):
                self.cool(effect)
        return out

    def run_script(self, node: ClusterLobby, op: QueueOp) -> node_messages.QueueResult | None:
        """Run ``op``'s Lua script as the backend does; its typed result (None for a leave)."""
        args = queue_op_args(op, PREFIX, node.node, self.config.max_queue, self.never)
        reply = self.scripts[op.op](keys=queue_keys(PREFIX), args=args)
        return None if op.op == "leave" else node_messages.queue_result(reply)

    @staticmethod
    def carry(forward: Forward) -> node_messages.NodeMessage:
        """The message as the other node receives it: encoded and decoded as over pub/sub."""
        message = node_messages.decode(node_messages.encode(forward.message))
        assert message is not None, forward
        return message

    def cool(self, effect: Cooldown) -> None:
        a, b = sorted((effect.a, effect.b))
        key = f"{PREFIX}cool:{a}:{b}"
        self.redis.set(key, 1)
        self.cooling[key] = self.now + effect.seconds


class InterleavedCluster(RedisCluster):
    """The same two nodes, with the order of their I/O left to the caller.

    :class:`RedisCluster` carries out every effect at once; a real node does
    not. Here each node has what the Redis backend has in flight:

    * ``ops``: queue operations, messages to publish and cooldowns the core
      emitted, not yet run in Redis (one ordered worker per node);
    * ``results``: queue-script results already decided in Redis, not yet fed
      back to the core (they come back in the order the ops ran);
    * ``inbox``: messages another node published here, not yet delivered
      (pub/sub keeps one sender's order).

    :meth:`step` runs one of these, chosen by the caller, so a test can walk
    every order the real backend allows: a ``Paired`` message overtaking the
    result of the join it answers, a ``leave`` running between a pop and its
    message, and so on. Client calls return only what the core sends at once.
    """

    def __init__(self, url: str, config: LobbyConfig, new_room_id: Any) -> None:
        super().__init__(url, config, new_room_id)
        self.ops: dict[str, deque[QueueOp | Forward | Cooldown]] = {n: deque() for n in NODES}
        self.results: dict[str, deque[tuple[QueueOp, Any]]] = {n: deque() for n in NODES}
        self.inbox: dict[str, deque[Any]] = {n: deque() for n in NODES}
        #: (peer, ticket) of every pairing a node refused (it answered ``Left``)
        self.refused: list[tuple[str, int]] = []

    def _settle(self, origin: ClusterLobby, effects: list[Effect]) -> list[Effect]:
        out: list[Effect] = []
        for effect in effects:
            if isinstance(effect, Send | Close | Event):
                out.append(effect)
            else:
                self.ops[origin.node].append(effect)
        return out

    def steps(self) -> list[tuple[str, str]]:
        """What may happen next: ``(kind, node)`` with kind ``run``, ``result`` or ``deliver``."""
        queues = (("run", self.ops), ("result", self.results), ("deliver", self.inbox))
        return [(kind, n) for kind, per_node in queues for n in NODES if per_node[n]]

    def quiet(self) -> bool:
        return not self.steps()

    def step(self, kind: str, name: str) -> list[Effect]:
        node = self.nodes[name]
        if kind == "run":
            op = self.ops[name].popleft()
            if isinstance(op, QueueOp):
                result = self.run_script(node, op)
                if result is not None:
                    self.results[name].append((op, result))
            elif isinstance(op, Forward):
                self.inbox[op.node].append(self.carry(op))
            else:
                self.cool(op)
            return []
        if kind == "result":
            op, result = self.results[name].popleft()
            return self._settle(node, node.queue_result(op, result, self.now))
        message = self.inbox[name].popleft()
        effects = node.deliver(message, self.now)
        if isinstance(message, node_messages.Paired) and any(
            isinstance(e, Forward) and isinstance(e.message, node_messages.Left) for e in effects
        ):
            self.refused.append((message.target, message.ticket))
        return self._settle(node, effects)

    def ticket_of(self, peer_id: str) -> int:
        """The ticket of the peer's latest join, 0 if it does not wait."""
        return self.lobby_of(peer_id)._tickets.get(peer_id, 0)

    def rejoin(self, name: str, *, first: bool) -> None:
        """The node lost Redis for a moment (nothing was lost) and re-joins its waiting peers:
        ahead of what it has in flight (``first``: its worker's next batch) or after it
        (its heartbeat)."""
        ops = self.nodes[name].rejoin_all()
        if first:
            self.ops[name].extendleft(reversed(ops))
        else:
            self.ops[name].extend(ops)
