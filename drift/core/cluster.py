"""The core of one node of a cluster that shares its queue (Redis backend). Still pure.

:class:`ClusterLobby` is the same :class:`~drift.core.lobby.Lobby` — the same
validation, states, role rule, relays, room ending and limits — with two
differences:

* joining goes through a queue shared by every node: the core emits
  ``QueueOp("join" | "retry" | "leave", peer, ticket)`` and the I/O layer
  answers with :meth:`ClusterLobby.queue_result` once the shared queue has
  decided;
* a partner may live on another node: the core emits ``Forward(node, message)``
  and the other node's I/O layer hands the message to its own core with
  :meth:`ClusterLobby.deliver`. The messages and queue results are typed in
  :mod:`drift.core.node_messages`.

What the I/O layer guarantees (``RedisBackend``), and nothing more: one node's
queue operations run in Redis in the order the core emitted them, and their
results come back to the core in that same order; messages from one node to
another arrive in the order they were sent, or not at all (pub/sub). Nothing
orders a node's *results* against the *messages* it receives: another node's
``Paired`` may arrive before the result of the very join it answers.

Tickets
-------
Every ``join`` carries a fresh ticket, stored with the peer's queue entry;
whoever pops the entry hands the ticket back. An entry counts for a peer only
while it carries the ticket of that peer's **latest** join and the peer still
waits here: a pairing through any other entry is refused. So a peer is never
paired through an entry that a later join of its own would duplicate, and the
shared queue never keeps an entry for a peer that no longer waits.

Interleavings, and what each peer sees
--------------------------------------
``x`` waits on node A; ``y`` joins on node B and pops x's entry. What A may see,
and what each peer is sent:

* **x's join result (Waiting), then Paired** — x: ``waiting`` … ``matched``
  (answerer); y: ``matched`` (offerer). The plain case.
* **Paired before x's join result** (the two travel on different connections) —
  the entry held x, so that result can only be ``Waiting``: x is told
  ``waiting`` and then ``matched`` (answerer) at once; the late result is stale
  (x no longer waits) and ignored. Same when the popper is on A itself and x's
  result is still behind.
* **x left or disconnected before Paired** — A refuses with
  ``Left(left|disconnected)``: y gets ``matched`` then ``partner-left``.
* **x left and joined again before Paired** — the popped entry carries x's old
  ticket: refused as above; x's new join goes on by itself.
* **x sent next while waiting** — nothing changes: ``waiting`` again, same
  place and ticket, then as above.
* **x sent next in a room, and Paired for the new join beats its result** —
  the old partner gets ``partner-left``; x gets ``waiting``, ``matched``.
* **x's cooldown ended and its retry finds no entry (Gone)** — typically x and
  its old partner both retried and the other's retry popped x: its Paired (or,
  on A, its Matched result) is on its way, and pairs x when it comes. Nothing is
  done on Gone; an entry that Redis lost is put back by ``rejoin_all``.
* **y's join popped x but y left before its Matched result** — x goes back in
  (``Requeue`` to A, or a local join), told nothing. A Requeue with a stale
  ticket is ignored: x already has a later join under way.
* **Redis came back (rejoin_all) while a Paired is on its way** — every waiting
  peer joins again under a new ticket (keeping its place if its entry
  survived); the Paired is then stale and refused.
* **x's join result is Unavailable** — x, never told ``waiting``, gets
  ``error/unavailable`` and goes idle; a ``leave`` follows in case the join ran
  after all. A peer already told ``waiting`` keeps waiting.

In every case each peer's frames follow docs/protocol.md: ``matched`` as answerer
only after ``waiting``; ``error/queue-full`` and ``error/unavailable`` only
before it. A room whose two sides disagree never exists: the side that refuses
always tells the other (``Left``), which ends the room as any departure does.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

from drift.core import node_messages as nm
from drift.core import protocol as p
from drift.core.lobby import (
    _WAITING,
    Cooldown,
    Effect,
    Event,
    Forward,
    Lobby,
    LobbyConfig,
    Member,
    Peer,
    QueueOp,
    RemotePeer,
    Send,
    State,
)
from drift.core.node_messages import QueueResult
from drift.core.protocol import ErrorCode

__all__ = ["ClusterLobby", "Cooldown", "QueueResult"]


class ClusterLobby(Lobby):
    shared_queue = True

    def __init__(
        self,
        node: str,
        config: LobbyConfig | None = None,
        new_room_id: Callable[[], str] | None = None,
    ) -> None:
        super().__init__(config, new_room_id)
        self.node = node
        #: waiting peers not told ``waiting`` yet (their join is with the shared queue)
        self._pending: set[str] = set()
        #: waiting peer -> ticket of its latest join
        self._tickets: dict[str, int] = {}
        #: peer -> its joins and retries whose results have not come back
        self._in_flight: dict[str, int] = {}
        #: waiting peers to join again once their ops in flight are back (rejoin_all)
        self._rejoin_later: set[str] = set()
        self._next_ticket = itertools.count(1).__next__

    @property
    def rooms_hosted(self) -> int:
        """Rooms whose offerer is here: summed over nodes, each room counts once."""
        return sum(1 for room in self.rooms.values() if isinstance(room.offerer, Peer))

    # ------------------------------------------------------------ shared queue

    def _join(self, peer_id: str) -> QueueOp:
        """A join under a fresh ticket: from now on only that entry stands for the peer."""
        ticket = self._next_ticket()
        self._tickets[peer_id] = ticket
        return self._ask(QueueOp("join", peer_id, ticket))

    def _ask(self, op: QueueOp) -> QueueOp:
        self._in_flight[op.peer] = self._in_flight.get(op.peer, 0) + 1
        return op

    def _holds(self, peer_id: str, ticket: int) -> Peer | None:
        """The peer, if it waits here and ``ticket`` is that of its latest join."""
        if self._tickets.get(peer_id) != ticket:
            return None
        return self.queue.get(peer_id)

    def _enqueue(self, peer: Peer, now: float, out: list[Effect]) -> None:
        peer.state = State.WAITING
        peer.queued_at = now
        self.queue[peer.id] = peer
        self._pending.add(peer.id)
        out.append(self._join(peer.id))

    def _dequeue(self, peer: Peer, out: list[Effect]) -> None:
        if self.queue.pop(peer.id, None) is not None:
            out.append(QueueOp("leave", peer.id))
        self._pending.discard(peer.id)
        self._tickets.pop(peer.id, None)
        self._rejoin_later.discard(peer.id)
        peer.state = State.IDLE

    def _taken(self, peer: Peer, out: list[Effect], *, held: bool) -> None:
        """``peer`` leaves the queue for a room (no leave op: the pairing emptied its entry).

        ``held``: the pairing popped the peer's entry (someone else's op did
        it). A held peer whose join result has not come back yet is told
        ``waiting`` first: its entry was in the queue, so that result can only
        be ``Waiting``, and the protocol promises it before ``matched``. A peer
        whose own join popped its partner was never held: it offers at once.
        """
        self.queue.pop(peer.id, None)
        self._tickets.pop(peer.id, None)
        self._rejoin_later.discard(peer.id)
        if peer.id in self._pending:
            self._pending.discard(peer.id)
            if held:
                out.append(Send(peer.id, _WAITING))
                out.append(Event("peer_waiting", peer.id))

    def _cooldown_ended(self, ended: list[Peer], now: float, out: list[Effect]) -> None:
        # The partner may be on another node: each side asks the shared queue
        # to look again, and the queue decides who waited longer.
        for peer in ended:
            if peer.state is State.WAITING and peer.id not in self._pending:
                out.append(self._ask(QueueOp("retry", peer.id, self._tickets[peer.id])))

    def queue_result(self, op: QueueOp, result: QueueResult, now: float) -> list[Effect]:
        """What the shared queue answered to ``op`` (results come back in the order of the ops)."""
        out: list[Effect] = []
        left = self._in_flight.pop(op.peer, 0) - 1
        if left > 0:
            self._in_flight[op.peer] = left
        peer = self._holds(op.peer, op.ticket)
        if isinstance(result, nm.Matched):
            self._matched(peer, op.peer, result, now, out)
        elif peer is None:
            # Stale: the peer left, was paired, or has a later join under way,
            # whose own result follows. Only an entry this op may have written
            # behind a failed answer needs removing.
            failed = isinstance(result, nm.Unavailable) and op.op == "join"
            if failed and op.peer in self.peers and op.peer not in self.queue:
                out.append(QueueOp("leave", op.peer))
        elif isinstance(result, nm.Waiting):
            if peer.id in self._pending:
                self._pending.discard(peer.id)
                out.append(Send(peer.id, _WAITING))
                out.append(Event("peer_waiting", peer.id))
        elif isinstance(result, nm.Gone):
            # A pairing took the entry and its Paired (or Matched) is on its way:
            # typically both sides of an ended cooldown retried at once. Nothing
            # to do; were the entry lost instead (Redis restarted), rejoin_all
            # puts it back.
            pass
        elif peer.id in self._pending:
            # Only a join that was never confirmed fails; a peer already told
            # `waiting` keeps waiting when a retry or re-join cannot get through.
            self._dequeue(peer, [])  # no leave op: the join wrote no entry, or see below
            if isinstance(result, nm.Full):
                self._error(peer, ErrorCode.QUEUE_FULL, "the queue is full", out)
            else:
                out.append(QueueOp("leave", peer.id))  # in case the join ran after all
                self._error(
                    peer, ErrorCode.UNAVAILABLE, "matchmaking is unavailable; try again", out
                )
        if left <= 0 and op.peer in self._rejoin_later:
            # The re-join rejoin_all held back goes now, behind everything in flight.
            self._rejoin_later.discard(op.peer)
            if op.peer in self.queue:
                out.append(self._join(op.peer))
        return out

    def _matched(
        self,
        peer: Peer | None,
        peer_id: str,
        result: nm.Matched,
        now: float,
        out: list[Effect],
    ) -> None:
        """``peer_id``'s op popped ``result.partner``'s entry (and, for a retry, its own)."""
        partner: Member
        if result.partner_node == self.node:
            local = self._holds(result.partner, result.partner_ticket)
            if local is None:
                # The partner left or joined again since: the popped entry was stale.
                if peer is not None:
                    out.append(self._join(peer.id))
                return
            partner = local
        else:
            partner = RemotePeer(result.partner, result.partner_node)
        if peer is None:
            # This peer left (or joined again) while the queue paired it: the
            # partner, already taken out of the shared queue, goes back in.
            self._requeue(partner, result.partner_ticket, out)
            return
        self._taken(peer, out, held=False)
        if isinstance(partner, Peer):
            self._taken(partner, out, held=True)
        newcomer, waited = (peer, partner) if result.part == "newcomer" else (partner, peer)
        room = self._pair(newcomer, waited, now, out)
        if isinstance(partner, RemotePeer):
            theirs: nm.Part = "waited" if result.part == "newcomer" else "newcomer"
            message = nm.Paired(
                partner.id, result.partner_ticket, peer_id, self.node, room.id, theirs
            )
            out.append(Forward(partner.node, message))

    def _requeue(self, member: Member, ticket: int, out: list[Effect]) -> None:
        if isinstance(member, RemotePeer):
            out.append(Forward(member.node, nm.Requeue(member.id, ticket)))
        elif self._holds(member.id, ticket) is not None:
            out.append(self._join(member.id))

    # ------------------------------------------------------------ other nodes

    def deliver(self, message: nm.NodeMessage, now: float) -> list[Effect]:
        """Handle a message another node's core sent here."""
        out: list[Effect] = []
        if isinstance(message, nm.Relay):
            target = self.peers.get(message.target)
            # A relay never crosses rooms, whichever node it came from.
            if target is not None and target.room is not None:
                room = target.room
                if room.id == message.room and room.partner_of(target).id == message.sender:
                    out.append(Send(target.id, message.frame))
        elif isinstance(message, nm.Paired):
            self._paired(message, now, out)
        elif isinstance(message, nm.Left):
            self._remote_left(
                message.target, message.sender, message.room, message.reason, now, out
            )
        else:
            peer = self._holds(message.target, message.ticket)
            if peer is not None:
                out.append(self._join(peer.id))
        return out

    def _paired(self, message: nm.Paired, now: float, out: list[Effect]) -> None:
        target = self._holds(message.target, message.ticket)
        if target is None:
            # Left, disconnected, or joined again since that entry was written.
            reason: p.LeaveReason = "left" if message.target in self.peers else "disconnected"
            refusal = nm.Left(message.other, message.target, message.room, reason)
            out.append(Forward(message.other_node, refusal))
            return
        self._taken(target, out, held=True)
        other = RemotePeer(message.other, message.other_node)
        newcomer, waited = (target, other) if message.part == "newcomer" else (other, target)
        self._pair(newcomer, waited, now, out, room_id=message.room)

    def _remote_left(
        self,
        target_id: str,
        sender: str,
        room_id: str,
        reason: p.LeaveReason,
        now: float,
        out: list[Effect],
    ) -> None:
        target = self.peers.get(target_id)
        room = target.room if target is not None else None
        if target is None or room is None or room.id != room_id:
            return
        ender = room.partner_of(target)
        if ender.id != sender:
            return
        self._close_room(room, ender, target, reason, now, out)

    def node_lost(self, node: str, now: float) -> list[Effect]:
        """``node`` stopped heartbeating: its peers are gone, as if disconnected."""
        out: list[Effect] = []
        for room in list(self.rooms.values()):
            for here, there in ((room.offerer, room.answerer), (room.answerer, room.offerer)):
                if isinstance(here, Peer) and isinstance(there, RemotePeer) and there.node == node:
                    self._close_room(room, there, here, "disconnected", now, out)
        return out

    def remote_nodes(self) -> set[str]:
        """Nodes that host a partner of one of our peers: the ones worth watching."""
        nodes: set[str] = set()
        for room in self.rooms.values():
            for member in (room.offerer, room.answerer):
                if isinstance(member, RemotePeer):
                    nodes.add(member.node)
        return nodes

    def rejoin_all(self) -> list[QueueOp]:
        """The shared queue may have lost entries (Redis restarted, or was unreachable):
        join every waiting peer again, under a new ticket (the join script keeps the
        place of an entry that survived).

        The I/O layer may run these ahead of operations already in flight (its
        next batch starts with them). A peer with a join or retry in flight is
        therefore joined again only once those are back: an older join running
        after a newer one could write an entry that nothing stands for.
        """
        ops: list[QueueOp] = []
        for peer_id in self.queue:
            if self._in_flight.get(peer_id):
                self._rejoin_later.add(peer_id)
            else:
                ops.append(self._join(peer_id))
        return ops
