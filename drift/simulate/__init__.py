"""``drift simulate``: synthetic aiortc peers that prove matching and real WebRTC calls.

Modules, one concern each: ``loopback`` (keep ICE on 127.0.0.1), ``media``
(identity video), ``peer`` (one peer: protocol client + RTCPeerConnection, and
:func:`~drift.simulate.peer.run_one_peer` for browser interop), ``records``
(what peers observed), ``verify`` (the verdict from both sides of each room),
``runner`` (one process's peers), ``workers`` (``--procs``), ``embedded`` (the
default target), ``report`` (files and tables), ``command`` (the CLI).
"""
