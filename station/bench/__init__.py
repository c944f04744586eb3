"""Benchmarks (DESIGN §8): speed of the real pipeline and of its stages, on synthetic parts.

* :mod:`station.bench.pipeline` — per-stage timings through the live station's Inspector
  (``station bench``).
* :mod:`station.bench.align` — geometric alignment alone (``python -m station.bench.align``).
* :mod:`station.bench.metric` — NSOARTC + cell scores + overlay
  (``python -m station.bench.metric``).
* :mod:`station.bench.machine` — the machine and date the figures were measured on.

Figures and how they were measured: ``docs/BENCHMARKS.md``.
"""
