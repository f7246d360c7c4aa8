"""Draw the README's figures into docs/figures/ from the model and from real runs.

    python scripts/figures.py [--output docs/figures] [--runs outputs/figures] [NAME ...]

NAME: architecture, phases, quickstart (default: all three). The same as
``python -m autoencoder.figures`` (see that module).
"""

from autoencoder.figures import main

if __name__ == "__main__":
    main()
