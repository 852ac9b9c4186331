"""The NViR network: torchvision ResNet18 (BatchNorm) with a one-channel first
convolution, an identity ``fc``, flatten, ``torchvision.ops.MLP(512, [32]*4,
dropout=0.3)`` and ``Linear(32, 1)``.

Attribute names follow the paper's checkpoint layout so that state-dict keys
map one to one:

- ``encoder.0.<resnet18 key>``   (``encoder = Sequential(resnet18, Flatten)``)
- ``regression_head.0.{0,3,6,9}.{weight,bias}``  (the MLP's four linears)
- ``regression_head.1.{weight,bias}``            (the 32 → 1 output)
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torchvision
from torch import nn

ARCHITECTURE = "nvir-resnet18-mlp"
HEAD_HIDDEN = [32, 32, 32, 32]
HEAD_DROPOUT = 0.3
ENCODER_FEATURES = 512


class NViR(nn.Module):
    """Image (B, 1, H, W) → viability (B, 1)."""

    def __init__(self) -> None:
        super().__init__()
        resnet = torchvision.models.resnet18(weights=None)
        resnet.conv1 = nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)
        resnet.fc = nn.Identity()
        self.encoder = nn.Sequential(resnet, nn.Flatten())
        mlp = torchvision.ops.MLP(ENCODER_FEATURES, HEAD_HIDDEN, dropout=HEAD_DROPOUT)
        self.regression_head = nn.Sequential(mlp, nn.Linear(HEAD_HIDDEN[-1], 1))

    @property
    def resnet(self) -> nn.Module:
        return self.encoder[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.regression_head(self.encoder(x))


def build_nvir(imagenet_state: Mapping[str, torch.Tensor] | None = None) -> NViR:
    """A fresh NViR network.

    ``imagenet_state`` is a torchvision ResNet18 state dict (e.g. from
    ``ResNet18_Weights.IMAGENET1K_V1.get_state_dict()`` or a saved ``.pth``);
    when given, the encoder starts from it, with the first convolution's
    weight taken as the sum of the three RGB kernels as the paper does, and
    the ImageNet ``fc`` dropped. Without it, weights are torchvision's random
    initialisation.
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


def expected_shapes() -> dict[str, tuple[int, ...]]:
    """Every state-dict key of the NViR network with its shape (the checkpoint layout)."""
    return {k: tuple(v.shape) for k, v in NViR().state_dict().items()}


def parameter_count(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())
