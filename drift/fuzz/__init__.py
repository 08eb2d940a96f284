"""``drift fuzz``: mutated and random frames against a running server.

:mod:`~drift.fuzz.rawws` writes WebSocket frames byte by byte (fragments,
reserved bits, bad opcodes: things a normal client refuses to send),
:mod:`~drift.fuzz.mutate` builds the frames with the answer docs/protocol.md
prescribes for each, :mod:`~drift.fuzz.runner` drives many connections and an
honest pair and judges, and :mod:`~drift.fuzz.command` is the CLI.
"""
