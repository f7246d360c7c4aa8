"""The benchmark suite: ``python scripts/benchmark.py PART [options] [OVERRIDES ...]``, the
same as ``python -m autoencoder.benchmarks`` (the parts and their options:
autoencoder/benchmarks/cli.py, or ``--help``)."""

from autoencoder.benchmarks.cli import main

if __name__ == "__main__":
    main()
