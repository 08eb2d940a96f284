"""The core of one node of a cluster that shares its queue (Redis backend). Still pure.

:class:`ClusterLobby` is the same :class:`~drift.core.lobby.Lobby` — the same
validation, states, role rule, relays and limits — with two differences:

* joining goes through a queue shared by every node: the core emits
  ``QueueOp("join" | "retry" | "leave", peer)`` and the I/O layer answers
  with :meth:`ClusterLobby.queue_result` once the shared queue has decided;
* a partner may live on another node: the core emits ``Forward(node, message)``
  and the other node's I/O layer hands the message to its own core with
  :meth:`ClusterLobby.deliver`.

Messages between nodes are tuples of strings:

==============================================================  ==========================
``("paired", target, other, other_node, room, "waited"|"newcomer")``  ``target`` was paired
``("relay", target, sender, room, frame)``                      a frame for ``target``
``("left", target, sender, room, reason)``                      the room ended
``("requeue", target)``                                         the pairing fell through
==============================================================  ==========================

Races between nodes are settled towards the protocol's promises: a peer that
was popped from the shared queue by a pairing whose other side had just left
is put back in the queue (``requeue``), and a pairing that reaches a peer that
has just left ends at once with ``partner-left``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

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
from drift.core.protocol import ErrorCode

QueueResult = tuple[str, ...]
"""What the shared queue answered: ``("waiting",)``, ``("full",)``, ``("gone",)``,
``("unavailable",)`` or ``("matched", partner, partner_node, "waited"|"newcomer")``
where the last item is this peer's own part."""

_REASONS: Final[dict[str, p.LeaveReason]] = {
    "left": "left",
    "next": "next",
    "disconnected": "disconnected",
    "timeout": "timeout",
}

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
        #: peers whose join is with the shared queue and not answered yet
        self._pending: set[str] = set()

    @property
    def rooms_hosted(self) -> int:
        """Rooms whose offerer is here: summed over nodes, each room counts once."""
        return sum(1 for room in self.rooms.values() if isinstance(room.offerer, Peer))

    # ------------------------------------------------------------ shared queue

    def _enqueue(self, peer: Peer, now: float, out: list[Effect]) -> None:
        peer.state = State.WAITING
        peer.queued_at = now
        self.queue[peer.id] = peer
        self._pending.add(peer.id)
        out.append(QueueOp("join", peer.id))

    def _dequeue(self, peer: Peer, out: list[Effect]) -> None:
        if self.queue.pop(peer.id, None) is not None:
            out.append(QueueOp("leave", peer.id))
        self._pending.discard(peer.id)
        peer.state = State.IDLE

    def _cooldown_ended(self, ended: list[Peer], now: float, out: list[Effect]) -> None:
        # The partner may be on another node: each side asks the shared queue
        # to look again, and the queue decides who waited longer.
        for peer in ended:
            if peer.state is State.WAITING and peer.id not in self._pending:
                out.append(QueueOp("retry", peer.id))

    def queue_result(self, peer_id: str, result: QueueResult, now: float) -> list[Effect]:
        out: list[Effect] = []
        peer = self.peers.get(peer_id)
        waiting = peer is not None and peer_id in self.queue
        kind = result[0] if result else "unavailable"
        if kind == "matched":
            _, partner_id, partner_node, part = result
            self._matched(
                peer if waiting else None, peer_id, partner_id, partner_node, part, now, out
            )
            return out
        if peer is None or not waiting:
            return out  # it left meanwhile; its leave op follows this one
        if kind == "waiting":
            if peer_id in self._pending:
                self._pending.discard(peer_id)
                out.append(Send(peer_id, _WAITING))
                out.append(Event("peer_waiting", peer_id))
        elif kind == "gone":
            # The shared queue lost this peer (Redis restarted): put it back.
            out.append(QueueOp("join", peer_id))
        elif peer_id in self._pending:
            # Only a join that was never confirmed fails; a peer already told
            # `waiting` keeps waiting when a retry or re-join cannot get through.
            self.queue.pop(peer_id, None)
            self._pending.discard(peer_id)
            peer.state = State.IDLE
            if kind == "full":
                self._error(peer, ErrorCode.QUEUE_FULL, "the queue is full", out)
            else:
                self._error(
                    peer, ErrorCode.UNAVAILABLE, "matchmaking is unavailable; try again", out
                )
        return out

    def _matched(
        self,
        peer: Peer | None,
        peer_id: str,
        partner_id: str,
        partner_node: str,
        part: str,
        now: float,
        out: list[Effect],
    ) -> None:
        local_partner = self.peers.get(partner_id) if partner_node == self.node else None
        partner: Member = local_partner or RemotePeer(partner_id, partner_node)
        if peer is None:
            # This peer left while the queue paired it: the partner, already
            # taken out of the shared queue, goes back in.
            self._requeue(partner, out)
            return
        self.queue.pop(peer_id, None)
        self._pending.discard(peer_id)
        if isinstance(partner, Peer):
            if partner.id not in self.queue:
                self._requeue(peer, out)
                return
            self.queue.pop(partner.id, None)
            self._pending.discard(partner.id)
        newcomer, waited = (peer, partner) if part == "newcomer" else (partner, peer)
        room = self._pair(newcomer, waited, now, out)
        if isinstance(partner, RemotePeer):
            theirs = "waited" if part == "newcomer" else "newcomer"
            message = ("paired", partner_id, peer_id, self.node, room.id, theirs)
            out.append(Forward(partner_node, message))

    def _requeue(self, member: Member, out: list[Effect]) -> None:
        if isinstance(member, RemotePeer):
            out.append(Forward(member.node, ("requeue", member.id)))
        elif member.id in self.queue:
            out.append(QueueOp("join", member.id))

    # ------------------------------------------------------------ other nodes

    def deliver(self, message: tuple[str, ...], now: float) -> list[Effect]:
        """Handle a message another node's core sent here (malformed ones are dropped)."""
        out: list[Effect] = []
        if not message:
            return out
        kind, args = message[0], message[1:]
        if kind == "relay" and len(args) == 4:
            target_id, sender, room_id, frame = args
            target = self.peers.get(target_id)
            # A relay never crosses rooms, whichever node it came from.
            if target is not None and target.room is not None:
                room = target.room
                if room.id == room_id and room.partner_of(target).id == sender:
                    out.append(Send(target_id, frame))
        elif kind == "paired" and len(args) == 5:
            self._paired(*args, now=now, out=out)
        elif kind == "left" and len(args) == 4 and args[3] in _REASONS:
            target_id, sender, room_id, reason = args
            self._remote_left(target_id, sender, room_id, _REASONS[reason], now, out)
        elif kind == "requeue" and len(args) == 1:
            peer = self.peers.get(args[0])
            if peer is not None and peer.id in self.queue:
                out.append(QueueOp("join", peer.id))
        return out

    def _paired(
        self,
        target_id: str,
        other_id: str,
        other_node: str,
        room_id: str,
        part: str,
        *,
        now: float,
        out: list[Effect],
    ) -> None:
        target = self.peers.get(target_id)
        if target is None or target_id not in self.queue:
            reason: p.LeaveReason = "disconnected" if target is None else "left"
            out.append(Forward(other_node, ("left", other_id, target_id, room_id, reason)))
            return
        self.queue.pop(target_id, None)
        self._pending.discard(target_id)
        other = RemotePeer(other_id, other_node)
        newcomer, waited = (target, other) if part == "newcomer" else (other, target)
        self._pair(newcomer, waited, now, out, room_id=room_id)

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
        del self.rooms[room_id]
        cooldown = self.config.rematch_cooldown
        end = now + cooldown
        self._leave_room(target, sender, end)
        if cooldown > 0:
            self._push_cooldown(end, target_id, sender)
        out.append(Send(target_id, p.encode(p.PartnerLeft(reason=reason))))
        out.append(
            Event(
                "room_closed",
                sender,
                room_id,
                {"reason": reason, "duration_s": now - room.created_at},
            )
        )

    def node_lost(self, node: str, now: float) -> list[Effect]:
        """``node`` stopped heartbeating: its peers are gone, as if disconnected."""
        out: list[Effect] = []
        for room in list(self.rooms.values()):
            for here, there in ((room.offerer, room.answerer), (room.answerer, room.offerer)):
                if isinstance(here, Peer) and isinstance(there, RemotePeer) and there.node == node:
                    self._remote_left(here.id, there.id, room.id, "disconnected", now, out)
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
        """The shared queue was lost (Redis restarted empty): queue our waiting peers again."""
        return [QueueOp("join", peer_id) for peer_id in self.queue]
