"""Benchmarks: each ``bench/bench_<name>.py`` has ``run(quick: bool) -> dict`` and its
result is written to ``bench/results/<name>.json`` with the machine and the date."""
