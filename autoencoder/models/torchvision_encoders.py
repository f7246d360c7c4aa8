"""torchvision's ResNets and VGGs as encoders: each network cut into named stages (ResNet:
``stem``, ``layer1`` .. ``layer4``; VGG: ``block1`` .. ``block5``, the runs between
max-pools), one :class:`~autoencoder.models.encoder_spec.EncoderSpec` per model name."""

from __future__ import annotations

from collections import OrderedDict
from functools import partial

import torchvision
from torch import nn

from autoencoder.models.encoder_spec import EncoderSpec


def _resnet_stages(net: torchvision.models.ResNet) -> OrderedDict[str, nn.Module]:
    stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool)
    return OrderedDict(
        stem=stem, layer1=net.layer1, layer2=net.layer2, layer3=net.layer3, layer4=net.layer4
    )


_VGG_CONFIGS = {"vgg11": "A", "vgg13": "B", "vgg16": "D", "vgg19": "E"}


class _VGGFeatures(nn.Module):
    """The convolutional part of a torchvision VGG, with the same parameter names.

    Building the full VGG would also initialise its 120M-parameter classifier, which takes
    seconds and is thrown away; the features use torchvision's own layer recipe and init.
    """

    def __init__(self, name: str) -> None:
        super().__init__()
        config = torchvision.models.vgg.cfgs[_VGG_CONFIGS[name.removesuffix("_bn")]]
        self.features = torchvision.models.vgg.make_layers(config, batch_norm=name.endswith("_bn"))
        for module in self.features.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)


def _vgg_stages(net: _VGGFeatures) -> OrderedDict[str, nn.Module]:
    stages: OrderedDict[str, nn.Module] = OrderedDict()
    start = 0
    for index, layer in enumerate(net.features):
        if isinstance(layer, nn.MaxPool2d):
            stages[f"block{len(stages) + 1}"] = net.features[start : index + 1]
            start = index + 1
    return stages


TORCHVISION_ENCODERS: dict[str, EncoderSpec] = {
    **{
        name: EncoderSpec(partial(torchvision.models.get_model, name), _resnet_stages, name)
        for name in ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")
    },
    **{
        f"vgg{n}{bn}": EncoderSpec(partial(_VGGFeatures, f"vgg{n}{bn}"), _vgg_stages, f"vgg{n}{bn}")
        for n in (11, 13, 16, 19)
        for bn in ("", "_bn")
    },
}
