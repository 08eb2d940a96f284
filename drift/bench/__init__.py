"""``drift bench``: server capacity against baselines measured in the same run.

:mod:`.servers` names the servers under test (drift, the bare relay), started as
their own processes through :mod:`drift.harness`; :mod:`.loadgen` is the load
client, always another process, so neither side's sockets, CPU or memory are
counted on the other's; :mod:`.results` turns repetitions into medians, ratios
and the table of ``docs/performance.md``. The benchmarks themselves are
:mod:`drift.bench.suites` and :mod:`.command` runs them all.
"""
