"""Benchmarks. `make bench` runs `python -m bench.ingress`; see bench/README.md."""
