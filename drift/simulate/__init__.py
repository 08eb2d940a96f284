"""``drift simulate``: synthetic aiortc peers that prove matching and real WebRTC calls.

Modules, one concern each: ``settings`` (the command's one frozen settings
object), ``loopback`` (which host addresses peers gather ICE candidates on),
``sdp`` (trickle and identity-tag surgery on SDP text), ``handshake`` (the
data-channel check, a pure state machine), ``media`` (identity video),
``dialect`` (drift peer or browser partner: one strategy object), ``call`` (one
round's RTCPeerConnection: negotiation, trickle, channel), ``peer`` (one peer's
rounds), ``interop`` (:func:`~drift.simulate.interop.run_one_peer`, one peer
against a browser), ``records`` (what peers observed), ``verify`` (the verdict
from both sides of each room), ``runner`` (one process's peers),
``peer_processes`` (``--procs``), ``embedded`` (the default target), ``report``
(files and tables), ``command`` (the CLI).
"""
