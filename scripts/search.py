"""A hyperparameter search on current Optuna: ``python scripts/search.py --trials N
[--storage sqlite:///study.db --study NAME] [overrides ...]`` (the same as
``python -m autoencoder.search``)."""

from autoencoder.search import main

if __name__ == "__main__":
    main()
