"""``wsgate bench``: the benchmark of wsgate's two modes against two one-process baselines.

:mod:`bench.cli` is the command and :mod:`bench.plan` its list of steps. Load-generator
processes (:mod:`bench.fleet`, :mod:`bench.loadgen`, :mod:`bench.traffic`, with the lean
client of :mod:`bench.client`) drive the systems under test (:mod:`bench.systems`,
:mod:`bench.baselines`) through the scenarios of :mod:`bench.scenarios`;
:mod:`bench.cost` and :mod:`bench.procstat` say what it cost; :mod:`bench.results`,
:mod:`bench.report` and :mod:`bench.plots` hold and show the figures.
"""

__all__: list[str] = []
