"""Draw the README's figures into docs/figures/ from the model and from real runs.

    python scripts/figures.py [--output docs/figures] [--runs outputs/figures] [NAME ...]

NAME: architecture, phases, quickstart (default: all three). phases and quickstart train a
run each through scripts/train.py (about a minute each on 2 CPU cores).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from autoencoder.figures import FIGURES, make


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", metavar="NAME", help=f"of {', '.join(FIGURES)}")
    parser.add_argument("--output", type=Path, default=Path("docs/figures"))
    parser.add_argument("--runs", type=Path, default=Path("outputs/figures"))
    args = parser.parse_args()
    unknown = sorted(set(args.names) - set(FIGURES))
    if unknown:
        parser.error(f"unknown figure {', '.join(unknown)}; choose from {', '.join(FIGURES)}")
    for path in make(args.names or FIGURES, args.output, args.runs):
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
