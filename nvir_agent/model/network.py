"""The NViR network: ResNet18 (BatchNorm) with a one-channel first
convolution, an identity ``fc``, flatten, an MLP head ``512 → [32]*4``
(dropout 0.3) and ``Linear(32, 1)``.

The ResNet18 and the MLP are written out here module for module as
torchvision builds them (``torchvision.models.resnet18`` and
``torchvision.ops.MLP``: same submodules, same order, same initialisation),
so that scoring does not import torchvision, which loads every model family
and torch's compiler stack and costs seconds at each start. A test checks
that both give the same state-dict keys and the same outputs.

Attribute names follow the paper's checkpoint layout so that state-dict keys
map one to one:

- ``encoder.0.<resnet18 key>``   (``encoder = Sequential(resnet18, Flatten)``)
- ``regression_head.0.{0,3,6,9}.{weight,bias}``  (the MLP's four linears)
- ``regression_head.1.{weight,bias}``            (the 32 → 1 output)

A deep ensemble (:class:`NViREnsemble`, ``nvir-agent train --ensemble N``)
holds N such networks trained from different seeds, under the keys
``members.<i>.<key>``; its viability is the members' mean.
:class:`Features` is the encoder part of either (one image → its 512-d
features, or the members' side by side), so that a fast inference path can
give the features and the small heads run on them in fp32.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from nvir_agent.model.fileheader import ARCHITECTURE  # the name model files give it

__all__ = ["ARCHITECTURE", "NViR", "NViREnsemble", "Features", "build_network", "build_nvir"]

HEAD_HIDDEN = [32, 32, 32, 32]
HEAD_DROPOUT = 0.3
ENCODER_FEATURES = 512


class BasicBlock(nn.Module):
    """torchvision's ResNet BasicBlock: two 3×3 convolutions and a shortcut."""

    def __init__(self, inplanes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample: nn.Module | None = None
        if stride != 1 or inplanes != planes:
            self.downsample = nn.Sequential(
                nn.Conv2d(inplanes, planes, 1, stride=stride, bias=False), nn.BatchNorm2d(planes)
            )
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class ResNet18(nn.Module):
    """torchvision's ``resnet18(weights=None)`` with a one-channel ``conv1`` and no ``fc``."""

    def __init__(self, in_channels: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        widths = (64, 128, 256, 512)
        inplanes = 64
        for i, planes in enumerate(widths, start=1):
            stride = 1 if i == 1 else 2
            layer = nn.Sequential(BasicBlock(inplanes, planes, stride), BasicBlock(planes, planes))
            setattr(self, f"layer{i}", layer)
            inplanes = planes
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Identity()
        for m in self.modules():  # torchvision's initialisation
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def mlp(in_features: int, hidden: list[int], dropout: float) -> nn.Sequential:
    """``torchvision.ops.MLP(in_features, hidden, dropout=dropout)``: Linear → ReLU →
    Dropout for each hidden width but the last, then Linear → Dropout."""
    layers: list[nn.Module] = []
    width = in_features
    for h in hidden[:-1]:
        layers += [nn.Linear(width, h), nn.ReLU(), nn.Dropout(dropout)]
        width = h
    layers += [nn.Linear(width, hidden[-1]), nn.Dropout(dropout)]
    return nn.Sequential(*layers)


class NViR(nn.Module):
    """Image (B, 1, H, W) → viability (B, 1)."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.Sequential(ResNet18(in_channels=1), nn.Flatten())
        head = mlp(ENCODER_FEATURES, HEAD_HIDDEN, HEAD_DROPOUT)
        self.regression_head = nn.Sequential(head, nn.Linear(HEAD_HIDDEN[-1], 1))

    @property
    def resnet(self) -> nn.Module:
        return self.encoder[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.regression_head(self.encoder(x))


class NViREnsemble(nn.Module):
    """N NViR networks (different seeds): image (B, 1, H, W) → mean viability (B, 1)."""

    def __init__(self, members: int) -> None:
        super().__init__()
        if members < 2:
            raise ValueError(f"an ensemble needs at least 2 members, not {members}")
        self.members = nn.ModuleList(NViR() for _ in range(members))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([m(x) for m in self.members]).mean(dim=0)


class Features(nn.Module):
    """The encoder(s) of a network, sharing its weights: image (B, 1, H, W) →
    (B, 512 × members) features, the members' side by side."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.encoders = nn.ModuleList(m.encoder for m in members(net))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if len(self.encoders) == 1:
            return self.encoders[0](x)
        return torch.cat([e(x) for e in self.encoders], dim=1)


def members(net: nn.Module) -> list[NViR]:
    """The NViR networks of ``net``: its members for an ensemble, else itself."""
    if isinstance(net, NViREnsemble):
        return list(net.members)
    return [net]  # type: ignore[list-item]


def heads(net: nn.Module) -> list[nn.Module]:
    """The regression head of each member, in member order."""
    return [m.regression_head for m in members(net)]


def build_network(n_members: int = 1) -> NViR | NViREnsemble:
    """A fresh network with random weights: one NViR, or an ensemble of ``n_members``."""
    return NViR() if n_members == 1 else NViREnsemble(n_members)


def build_nvir(imagenet_state: Mapping[str, torch.Tensor] | None = None) -> NViR:
    """A fresh NViR network.

    ``imagenet_state`` is a torchvision ResNet18 state dict (e.g. from
    ``ResNet18_Weights.IMAGENET1K_V1.get_state_dict()`` or a saved ``.pth``);
    when given, the encoder starts from it, with the first convolution's
    weight taken as the sum of the three RGB kernels as the paper does, and
    the ImageNet ``fc`` dropped. Without it, weights are torchvision's random
    initialisation (Kaiming normal for convolutions).
    """
    net = NViR()
    if imagenet_state is not None:
        load_imagenet_encoder(net, imagenet_state)
    return net


def load_imagenet_encoder(net: NViR, state: Mapping[str, torch.Tensor]) -> None:
    """Copy ImageNet ResNet18 weights into ``net``'s encoder (RGB conv1 summed to one channel).

    Raises ValueError naming the keys when ``state`` is not a ResNet18 state dict.
    """
    state = dict(state)
    conv1 = state.get("conv1.weight")
    if conv1 is None or tuple(conv1.shape) not in {(64, 3, 7, 7), (64, 1, 7, 7)}:
        shape = None if conv1 is None else tuple(conv1.shape)
        raise ValueError(
            f"not a torchvision ResNet18 state dict: conv1.weight has shape {shape}, "
            "expected (64, 3, 7, 7)"
        )
    state["conv1.weight"] = conv1.sum(dim=1, keepdim=True)
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    result = net.resnet.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise ValueError(
            "not a torchvision ResNet18 state dict: "
            f"missing {sorted(result.missing_keys)[:5]}, unexpected {sorted(result.unexpected_keys)[:5]}"
        )


def resnets(net: nn.Module) -> list[ResNet18]:
    """Every ResNet18 encoder inside ``net`` (one per member)."""
    return [m for m in net.modules() if isinstance(m, ResNet18)]


def expected_shapes() -> dict[str, tuple[int, ...]]:
    """Every state-dict key of the NViR network with its shape (the checkpoint layout)."""
    return {k: tuple(v.shape) for k, v in NViR().state_dict().items()}


def parameter_count(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())
