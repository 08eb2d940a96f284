"""``drift proxy``: a WebSocket proxy that puts wire-level faults between clients and a server.

It sits between real clients and a correct drift server and changes frames on
the wire (:mod:`drift.proxy.faults`), so ``drift simulate`` — or anyone's own
client — can be checked against a server that misbehaves in ways its code does
not contain. :mod:`drift.proxy.server` is the proxy, :mod:`drift.proxy.command`
the CLI.
"""
