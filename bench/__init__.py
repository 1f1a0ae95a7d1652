"""On-demand benchmarks: `python -m bench.<name>`; each writes its figures to bench/results/<name>.json."""
