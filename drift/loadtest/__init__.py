"""``drift loadtest``: locust scenarios against a signaling server, measured and reported.

Nothing in this package imports locust (it runs on gevent, which does not mix
with asyncio): locust runs as a subprocess on ``loadtest/locustfile.py``, and
only :mod:`drift.loadtest.scenario` is shared with it (it imports no asyncio).
"""
