"""Tiny vision transformers for the tests, registered in timm on import (a subprocess:
``imports=[tests.models.tiny_vits]``): two families of timm's ``vision_transformer`` module
at 48 channels and 4 blocks, built by timm's own code with the arguments of the real models.

* ``vit_test_reg4_dinov2``: DINOv2 ViT-S/14 with 4 registers (14 px patches, a class token
  and 4 register tokens, LayerScale, position embedding without the class token);
* ``vit_test_patch16``: a plain ViT/16 (``vit_tiny_patch16_224``: a class token).

They are registered as members of timm's ``vision_transformer`` module, where the encoder
looks for vision transformers (``autoencoder.models.vit_encoders.VIT_MODULES``)."""

from __future__ import annotations

from timm.models import is_model, register_model
from timm.models import vision_transformer as vit

TINY = {"embed_dim": 48, "depth": 4, "num_heads": 2}
DINOV2 = "timm/vit_test_reg4_dinov2"
PLAIN = "timm/vit_test_patch16"


def vit_test_reg4_dinov2(pretrained: bool = False, **kwargs):
    args = dict(patch_size=14, init_values=1e-5, reg_tokens=4, no_embed_class=True, img_size=56)
    return vit._create_vision_transformer(
        "vit_small_patch14_reg4_dinov2", pretrained=pretrained, **{**TINY, **args, **kwargs}
    )


def vit_test_patch16(pretrained: bool = False, **kwargs):
    args = dict(patch_size=16, img_size=64)
    return vit._create_vision_transformer(
        "vit_tiny_patch16_224", pretrained=pretrained, **{**TINY, **args, **kwargs}
    )


for entrypoint in (vit_test_reg4_dinov2, vit_test_patch16):
    if not is_model(entrypoint.__name__):
        entrypoint.__module__ = vit.__name__
        register_model(entrypoint)
