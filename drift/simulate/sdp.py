"""SDP text surgery for synthetic peers: trickle candidates out, identity tag in.

Pure string functions (no aiortc): aiortc puts every candidate in its SDP, so a
trickling peer strips the ``a=candidate`` lines and sends them as
``ice-candidate`` frames; every SDP carries a session-level tag naming its
sender, so an offer relayed into the wrong room is caught before any ICE.
"""

from __future__ import annotations

from typing import Final

from drift.core import protocol as p

#: Session-level SDP line naming the sender, so a relay from another room is caught
#: before any ICE happens. Browsers and aiortc ignore unknown attributes.
SDP_TAG: Final = "a=x-drift-peer:"


def split_candidates(sdp: str) -> tuple[str, list[p.CandidateInit]]:
    """Strip ``a=candidate``/``a=end-of-candidates`` lines; return them as trickle inits."""
    lines = sdp.split("\r\n")
    kept: list[str] = []
    found: list[p.CandidateInit] = []
    index = -1
    mid: str | None = None
    ufrag: str | None = None
    session_ufrag: str | None = None
    section: list[str] = []
    for line in lines:
        if line.startswith("m="):
            index += 1
            mid = None
            ufrag = session_ufrag
            section = []
        if line.startswith("a=mid:"):
            mid = line[6:]
        elif line.startswith("a=ice-ufrag:"):
            if index < 0:
                session_ufrag = line[12:]
            ufrag = line[12:]
        if line.startswith("a=candidate:"):
            section.append(line[2:])
            continue
        if line.startswith("a=end-of-candidates"):
            continue
        kept.append(line)
        if section and mid is not None:
            for cand in section:
                found.append(p.CandidateInit(cand, sdpMid=mid, sdpMLineIndex=index))
            section = []
    # candidates listed after a=mid in their section were flushed above; late ones here
    for cand in section:
        found.append(p.CandidateInit(cand, sdpMid=mid, sdpMLineIndex=max(index, 0)))
    if ufrag is not None:
        found = [
            p.CandidateInit(
                c.candidate, sdpMid=c.sdpMid, sdpMLineIndex=c.sdpMLineIndex, usernameFragment=ufrag
            )
            for c in found
        ]
    return "\r\n".join(kept), found


def tag_sdp(sdp: str, peer_id: str, room_id: str) -> str:
    """Add the session-level identity line after ``t=`` (relayed unchanged by the server)."""
    head, sep, tail = sdp.partition("\r\nt=")
    if not sep:
        return sdp
    line_end = tail.find("\r\n")
    if line_end < 0:
        return sdp
    return f"{head}{sep}{tail[:line_end]}\r\n{SDP_TAG}{peer_id} {room_id}{tail[line_end:]}"


def read_tag(sdp: str) -> tuple[str, str] | None:
    """The (peerId, roomId) of the tag :func:`tag_sdp` added, None when untagged."""
    start = sdp.find(SDP_TAG)
    if start < 0:
        return None
    end = sdp.find("\r\n", start)
    parts = sdp[start + len(SDP_TAG) : end if end >= 0 else None].split()
    return (parts[0], parts[1]) if len(parts) == 2 else None


def ice_ufrags(sdp: str) -> set[str]:
    """Every ``a=ice-ufrag`` of an SDP: a trickled candidate must name one of them."""
    return {line[12:].strip() for line in sdp.split("\r\n") if line.startswith("a=ice-ufrag:")}


def candidate_types(sdp: str) -> list[str]:
    """The distinct ``typ`` values of the ``a=candidate`` lines (host, srflx, prflx, relay).

    Distinct, because a bundled SDP repeats the same candidates in every m= section.
    """
    found: list[str] = []
    for line in sdp.split("\r\n"):
        if line.startswith("a=candidate:"):
            words = line.split()
            if "typ" in words[:-1]:
                kind = words[words.index("typ") + 1]
                if kind not in found:
                    found.append(kind)
    return found
