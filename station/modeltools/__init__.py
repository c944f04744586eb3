"""Model tooling behind ``station model`` that is not part of inspecting a part.

* :mod:`station.modeltools.tiny` — tiny random vision-language models with working processors,
  written offline (``station model tiny DIR``; the tests and the GPU benchmarks use them).
"""
