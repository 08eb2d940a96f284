"""``drift bench``: server capacity against baselines measured in the same run.

:mod:`.procs` starts the servers under test (drift, the bare relay, redis-server)
as their own processes and reads their CPU and RSS; :mod:`.loadgen` is the load
client, always another process, so neither side's sockets, CPU or memory are
counted on the other's; :mod:`.results` turns repetitions into medians, ratios
and the table of ``docs/performance.md``. The benchmarks themselves live in the
repository's ``drift/bench/suites/`` folder and :mod:`.command` runs them all.
"""
