"""In-process micro-benchmarks, each run as ``python -m benchmarks.micro.NAME`` in a
fresh subprocess that prints one JSON object on stdout (see scenarios/micro.py)."""
