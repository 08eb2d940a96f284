"""``drift simulate --network``: peers in real Linux network namespaces behind real NATs.

Modules, each one concern: :mod:`~drift.netlab.profile` (TOML profiles),
:mod:`~drift.netlab.namespaces` (named namespaces, moving a thread),
:mod:`~drift.netlab.router` (a router's nft script), :mod:`~drift.netlab.lab`
(building and removing a lab), :mod:`~drift.netlab.coturn` (STUN/TURN in the
lab), :mod:`~drift.netlab.cleanup` (nothing left behind),
:mod:`~drift.netlab.requirements`, :mod:`~drift.netlab.seat` (a peer's sockets
in its home), :mod:`~drift.netlab.session` (the seam simulate uses) and
:mod:`~drift.netlab.report`. docs/networks.md explains the lab.

Importing this package (or the profile module) needs no pyroute2; building a
lab does (``pip install 'drift-signal[network]'``).
"""
