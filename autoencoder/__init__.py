"""Pretrained-encoder convolutional autoencoders with two-phase fine-tuning."""

__version__ = "0.1.0"
