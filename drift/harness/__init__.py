"""Child processes and their readiness, for every tool and test that starts one.

- :mod:`.ports`: free loopback ports (one, or a block below the ephemeral range);
- :mod:`.env`: the environment a child gets (no stray ``DRIFT_*`` settings);
- :mod:`.programs`: finding an installed program, or one clear error;
- :mod:`.waiting`: waiting for a condition with a deadline, sync and async;
- :mod:`.child`: one child process: readiness from its output, its log, its stop;
- :mod:`.serve`: ``drift serve`` as a child, sync and async, ready when it prints its URL;
- :mod:`.redis`: a ``redis-server`` child, ready when it says so;
- :mod:`.coturn`: a coturn child, ready when a raw STUN Binding request is answered.

Readiness is always a real event (a printed line, an answered request) within
a deadline, never a fixed sleep.
"""
