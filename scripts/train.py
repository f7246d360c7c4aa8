"""Train an autoencoder: ``python scripts/train.py [experiment=NAME] [overrides ...]``
(the same as ``python -m autoencoder.train``)."""

from autoencoder.train import main

if __name__ == "__main__":
    main()
