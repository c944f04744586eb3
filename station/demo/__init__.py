"""Demo support: the synthetic line as the demo, the benches and the tests use it.

:mod:`station.demo.line` builds the synthetic line's recipe (one way, the demo's) and renders
parts as files a camera can play.  The ``station demo`` command itself is
:mod:`station.cmd_demo`.
"""
