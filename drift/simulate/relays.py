"""Digests of relayed frames: what a peer sent, compared with what its partner received.

Both sides digest the *decoded* frame re-encoded by :mod:`drift.core.protocol`,
so a server may re-serialise JSON (key order, spacing) and still relay "as
sent"; any change of content (an SDP line, a candidate) changes the digest.
Eight bytes per frame keeps the records cheap to pickle across processes.
"""

from __future__ import annotations

import hashlib

from drift.core import protocol as p


def digest(msg: p.Offer | p.Answer | p.IceCandidate) -> int:
    """A 64-bit digest of one relayed frame's content."""
    data = p.encode_client(msg)
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big")
