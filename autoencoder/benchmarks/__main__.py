"""``python -m autoencoder.benchmarks PART ...``: the benchmark suite (see
:mod:`autoencoder.benchmarks.cli`)."""

from autoencoder.benchmarks.cli import main

main()
