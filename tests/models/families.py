"""The encoder families the encoder contract runs on, each with what it declares: its stages,
their channels and downsampling, and whether it normalises with BatchNorm.

Every torchvision family of the encoder table, and the timm families the project documents
(ResNet-D with BatchNorm, ConvNeXt with LayerNorm) and a tiny vision transformer, built with
random weights."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Family:
    name: str
    stages: tuple[str, ...]
    channels: tuple[int, ...]
    reductions: tuple[int, ...]
    batchnorm: bool

    @property
    def needs_timm(self) -> bool:
        return self.name.startswith("timm/")


RESNET_STAGES = ("stem", "layer1", "layer2", "layer3", "layer4")
RESNET_REDUCTIONS = (4, 4, 8, 16, 32)
VGG_STAGES = tuple(f"block{i}" for i in range(1, 6))

TORCHVISION_FAMILIES = [
    *(
        Family(name, RESNET_STAGES, (64, 64, 128, 256, 512), RESNET_REDUCTIONS, True)
        for name in ("resnet18", "resnet34")
    ),
    *(
        Family(name, RESNET_STAGES, (64, 256, 512, 1024, 2048), RESNET_REDUCTIONS, True)
        for name in ("resnet50", "resnet101", "resnet152")
    ),
    *(
        Family(f"vgg{n}{bn}", VGG_STAGES, (64, 128, 256, 512, 512), (2, 4, 8, 16, 32), bn == "_bn")
        for n in (11, 13, 16, 19)
        for bn in ("", "_bn")
    ),
]

TIMM_FAMILIES = [
    Family(
        "timm/resnet18d",
        tuple(f"stage{i}" for i in range(1, 6)),
        (64, 64, 128, 256, 512),
        (2, 4, 8, 16, 32),
        True,
    ),
    Family(
        "timm/convnext_atto",
        tuple(f"stage{i}" for i in range(1, 5)),
        (40, 80, 160, 320),
        (4, 8, 16, 32),
        False,
    ),
]

# A vision transformer (tests/models/tiny_vits.py, registered in timm when built): a plain
# ViT/16 of 48 channels and 4 blocks, its embedding and one block per stage, every stage at
# the patch size's downsampling, LayerNorm only.
VIT_FAMILIES = [
    Family(
        "timm/vit_test_patch16",
        tuple(f"stage{i}" for i in range(1, 6)),
        (48,) * 5,
        (16,) * 5,
        False,
    ),
]

FAMILIES = TORCHVISION_FAMILIES + TIMM_FAMILIES + VIT_FAMILIES
