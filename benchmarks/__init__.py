"""Benchmarks: statemachine_server against other line-echo servers.

Run ``python -m benchmarks --help``; see benchmarks/README.md for the method.
Modules: ``servers`` (the peers, started and stopped), ``loadgen`` (the client),
``machine`` (machine facts, CPU pinning), ``results`` (the data), ``report``
(JSON and markdown), ``scenarios`` (one module per scenario).
"""
