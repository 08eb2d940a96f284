"""What cluster nodes tell each other and what the shared queue answers, typed.

Two vocabularies of the Redis backend, both pure data:

* **Node messages** travel from one node's core to another's
  (:class:`~drift.core.lobby.Forward` -> ``PUBLISH`` -> ``ClusterLobby.deliver``):

  ===============  ===============================================================
  :class:`Paired`  ``target`` (on the receiving node) was taken from the shared queue
                   by ``other``'s join: they share ``room``; ``part`` is target's
  :class:`Relay`   a client frame for ``target``, from ``sender`` in ``room``
  :class:`Left`    ``sender`` ended ``room``; ``target`` gets ``partner-left``
  :class:`Requeue` the join that took ``target`` from the queue fell through
  ===============  ===============================================================

* **Queue results** are what a queue script answered for one ``QueueOp``
  (:func:`queue_result` turns the script's reply into one of them).

A **ticket** names one entry of the shared queue: every ``join`` the core asks
for carries a fresh one, the queue stores it with the entry, and whoever pops
the entry hands it back (in :class:`Paired`, :class:`Matched`,
:class:`Requeue`). A node then knows whether a pairing took the entry of its
peer's *latest* join or a stale one (see :mod:`drift.core.cluster`).

Encoded as JSON arrays (``["paired", ...]``): compact, and decoding validates
the whole message in one msgspec pass. One is made for every frame relayed
between nodes, and none can hold a reference cycle (strings and numbers only):
``gc=False`` keeps them out of the cyclic garbage collector's counts.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final, Literal

import msgspec
from msgspec import Struct

from drift.core.protocol import LeaveReason

Part = Literal["waited", "newcomer"]

# ---------------------------------------------------------------- node -> node


class Paired(Struct, frozen=True, array_like=True, gc=False, tag="paired"):
    target: str
    #: the ticket of target's queue entry that was popped
    ticket: int
    other: str
    other_node: str
    room: str
    part: Part


class Relay(Struct, frozen=True, array_like=True, gc=False, tag="relay"):
    target: str
    sender: str
    room: str
    frame: str


class Left(Struct, frozen=True, array_like=True, gc=False, tag="left"):
    target: str
    sender: str
    room: str
    reason: LeaveReason


class Requeue(Struct, frozen=True, array_like=True, gc=False, tag="requeue"):
    target: str
    ticket: int


NodeMessage = Paired | Relay | Left | Requeue

_encoder: Final = msgspec.json.Encoder()
_decoder: Final[msgspec.json.Decoder[NodeMessage]] = msgspec.json.Decoder(NodeMessage)


def encode(message: NodeMessage) -> bytes:
    return _encoder.encode(message)


def decode(data: bytes | str) -> NodeMessage | None:
    """The message, or None for anything that is not one (not from a drift node)."""
    try:
        return _decoder.decode(data)
    except msgspec.DecodeError:
        return None


# ---------------------------------------------------------------- queue results


class Waiting(Struct, frozen=True):
    """The peer's entry is in the queue (appended now, or already there)."""


class Full(Struct, frozen=True):
    """The queue is at its bound; nothing was appended."""


class Gone(Struct, frozen=True):
    """A retry found no entry with the peer's ticket."""


class Unavailable(Struct, frozen=True):
    """Redis did not answer: the operation may or may not have run."""


class Matched(Struct, frozen=True):
    """The script popped ``partner``'s entry (ticket ``partner_ticket``) for this peer."""

    partner: str
    partner_node: str
    partner_ticket: int
    #: this peer's own part
    part: Part


QueueResult = Waiting | Full | Gone | Unavailable | Matched

WAITING: Final = Waiting()
FULL: Final = Full()
GONE: Final = Gone()
UNAVAILABLE: Final = Unavailable()
_PARTS: Final[dict[str, Part]] = {"waited": "waited", "newcomer": "newcomer"}


def queue_result(reply: Sequence[object] | None) -> QueueResult:
    """A queue script's reply (a Lua table), typed; anything unexpected is ``Unavailable``."""
    if not reply:
        return UNAVAILABLE
    kind = reply[0]
    if kind == "waiting":
        return WAITING
    if kind == "full":
        return FULL
    if kind == "gone":
        return GONE
    if kind == "matched" and len(reply) == 5:
        _, partner, node, ticket, part = reply
        own = _PARTS.get(str(part))
        if own is not None and str(ticket).isdigit():
            return Matched(str(partner), str(node), int(str(ticket)), own)
    return UNAVAILABLE
