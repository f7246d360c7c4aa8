"""Vision transformers as encoders: timm's ``VisionTransformer`` (ViT, DeiT, DINOv2 with or
without registers, MAE, SigLIP, CLIP, ...) cut into stages.

A ViT has no feature pyramid: its patch embedding downsamples by the patch size once, and
every block keeps the same grid of tokens. The stages group the network so that
discriminative rates and gradual unfreezing work as for a CNN's stages:

* ``stage1``: the patch embedding, the class and register tokens, the position embedding
  (interpolated to the image's grid of patches: timm's ``dynamic_img_size``) and
  ``norm_pre``;
* ``stage2`` .. ``stage5``: the blocks in :data:`BLOCK_GROUPS` groups as equal as possible
  (12 blocks: 4 groups of 3), the last with the final norm.

Between stages passes ``(tokens, (h, w))``: every token, the class and register tokens
(``num_prefix_tokens``) first, since the blocks attend to them, with the grid of patches.
:class:`TokenGrid` turns that into a feature map (B, C, h, w) of the patch tokens alone.
The stages are checked against timm's own ``forward_intermediates`` when they are built.
"""

from __future__ import annotations

from collections import OrderedDict
from types import ModuleType
from typing import Any

import torch
from torch import nn

from autoencoder.errors import ConfigError
from autoencoder.models.encoder_spec import TIMM_PREFIX, StageInfo

# The timm modules whose models are vision transformers of timm's VisionTransformer class.
VIT_MODULES = ("vision_transformer", "deit")
# How many groups the blocks are cut into: with the embedding, five stages, as a ResNet's
# stem and four layers, so finetune.factor spreads the rates over the same range. 12 blocks in
# groups of 3 with factor 2.6 give about 2.6 ** (1 / 3) = 1.38 per block, the layer-wise
# decay of 0.75 that MAE and BEiT fine-tune ViTs with.
BLOCK_GROUPS = 4

TokenState = tuple[torch.Tensor, tuple[int, int]]


def is_vit_name(timm: ModuleType, model_name: str) -> bool:
    """Whether timm defines ``model_name`` in one of :data:`VIT_MODULES`."""
    architecture = timm.models.get_arch_name(model_name)
    return bool(timm.models.is_model_in_modules(architecture, VIT_MODULES))


def create_vit(timm: ModuleType, model_name: str, pretrained: bool) -> nn.Module:
    """timm's ViT without its classifier head (nor attention pooling, nor ``fc_norm``),
    taking any image whose sides are multiples of the patch size."""
    net = timm.create_model(model_name, pretrained=pretrained, dynamic_img_size=True)
    vit_class = timm.models.vision_transformer.VisionTransformer
    patch_embed = getattr(net, "patch_embed", None)
    if type(net) is not vit_class or type(patch_embed) is not timm.layers.PatchEmbed:
        raise ConfigError(
            f"encoder.name={TIMM_PREFIX}{model_name}: timm builds it as a "
            f"{type(net).__name__} (patch embedding {type(patch_embed).__name__}); only timm's "
            "VisionTransformer with a plain patch embedding is an encoder (vit_*, deit_*, "
            "DINOv2, MAE, SigLIP, CLIP; not distilled DeiT, hybrid or NaFlex ViTs)."
        )
    height, width = patch_embed.patch_size
    if height != width:
        raise ConfigError(
            f"encoder.name={TIMM_PREFIX}{model_name}: its patches are {height} x {width} px; "
            "only square patches are supported."
        )
    net.reset_classifier(0, "")  # no head, no attention pooling
    net.fc_norm = nn.Identity()
    net.head_drop = nn.Identity()
    return net


def block_groups(num_blocks: int, groups: int = BLOCK_GROUPS) -> list[range]:
    """The blocks' indices in ``groups`` runs as equal as possible, larger ones first (one
    per block when there are fewer blocks)."""
    groups = min(groups, num_blocks)
    size, extra = divmod(num_blocks, groups)
    runs, start = [], 0
    for index in range(groups):
        end = start + size + (index < extra)
        runs.append(range(start, end))
        start = end
    return runs


class PatchTokens(nn.Module):
    """``stage1``: images to tokens, as timm's ViT does before its blocks. It holds the
    ViT's own modules and parameters (the same objects), under the ViT's names."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.patch_embed = net.patch_embed
        self.cls_token = net.cls_token
        self.reg_token = net.reg_token
        self.pos_embed = net.pos_embed
        self.pos_drop = net.pos_drop
        self.patch_drop = net.patch_drop
        self.norm_pre = net.norm_pre
        self.num_prefix_tokens = net.num_prefix_tokens
        self.no_embed_class = net.no_embed_class
        self.dynamic_img_size = net.dynamic_img_size
        self._pos_embed_of = type(net)._pos_embed  # reads only the attributes above

    def forward(self, images: torch.Tensor) -> TokenState:
        x = self.patch_embed(images)  # B, h, w, C (dynamic_img_size)
        grid = (x.shape[1], x.shape[2])
        x = self._pos_embed_of(self, x)
        return self.norm_pre(self.patch_drop(x)), grid


class TokenBlocks(nn.Module):
    """A run of transformer blocks, the last run with the ViT's final norm."""

    def __init__(self, blocks: nn.Sequential, norm: nn.Module | None = None) -> None:
        super().__init__()
        self.blocks = blocks
        self.norm = norm if norm is not None else nn.Identity()

    def forward(self, state: TokenState) -> TokenState:
        tokens, grid = state
        return self.norm(self.blocks(tokens)), grid


class TokenGrid(nn.Module):
    """Tokens to a feature map: the class and register tokens dropped, the patch tokens laid
    out on their grid (B, C, h, w), channels-last in memory. No weights."""

    def __init__(self, num_prefix_tokens: int) -> None:
        super().__init__()
        self.num_prefix_tokens = num_prefix_tokens

    def forward(self, state: TokenState) -> torch.Tensor:
        tokens, (height, width) = state
        patches = tokens[:, self.num_prefix_tokens :]
        return patches.reshape(tokens.shape[0], height, width, -1).permute(0, 3, 1, 2)


def vit_stages(net: nn.Module, model_name: str) -> OrderedDict[str, nn.Module]:
    """``stage1`` (the embedding) and one stage per group of blocks (:func:`block_groups`),
    checked to hold every parameter once and to compute timm's features."""
    runs = block_groups(len(net.blocks))
    stages: OrderedDict[str, nn.Module] = OrderedDict(stage1=PatchTokens(net))
    for index, run in enumerate(runs):
        norm = net.norm if index == len(runs) - 1 else None
        stages[f"stage{index + 2}"] = TokenBlocks(net.blocks[run.start : run.stop], norm)
    owned = [id(p) for stage in stages.values() for p in stage.parameters()]
    if len(owned) != len(set(owned)) or set(owned) != {id(p) for p in net.parameters()}:
        raise ConfigError(
            f"encoder.name={TIMM_PREFIX}{model_name}: its parameters are not held once each "
            "by its embedding, blocks and final norm; it cannot be cut into stages."
        )
    _check_forward(net, model_name, stages, [run.stop - 1 for run in runs])
    return stages


def _check_forward(
    net: nn.Module, model_name: str, stages: OrderedDict[str, nn.Module], taps: list[int]
) -> None:
    """The stages, run in turn, give timm's ``forward_intermediates`` on a 2 x 2 grid."""
    side = 2 * vit_patch_size(net)
    images = torch.rand(1, 3, side, side, generator=torch.Generator().manual_seed(0))
    grid = TokenGrid(net.num_prefix_tokens)
    training = net.training
    net.eval()
    try:
        with torch.no_grad():
            final, expected = net.forward_intermediates(images, indices=taps)
            final_map = grid((final, (2, 2)))
            state: Any = images
            outputs = []
            for stage in stages.values():
                state = stage(state)
                outputs.append(grid(state))
        # the last stage ends with the final norm, which timm's intermediates lack
        for stage_name, ours, theirs in zip(
            list(stages)[1:], outputs[1:], [*expected[:-1], final_map], strict=True
        ):
            if ours.shape != theirs.shape or not torch.allclose(ours, theirs, atol=1e-5):
                raise ConfigError(
                    f"encoder.name={TIMM_PREFIX}{model_name}: {stage_name} does not give timm's "
                    "features of its blocks; this ViT cannot be cut into stages."
                )
    finally:
        net.train(training)


def vit_patch_size(net: nn.Module) -> int:
    return int(net.patch_embed.patch_size[0])


def vit_stage_info(net: nn.Module) -> list[StageInfo]:
    """Every stage gives ``embed_dim`` channels at the patch size's downsampling."""
    return [StageInfo(net.embed_dim, vit_patch_size(net))] * (
        1 + len(block_groups(len(net.blocks)))
    )


def token_grid(net: nn.Module) -> nn.Module:
    return TokenGrid(net.num_prefix_tokens)
