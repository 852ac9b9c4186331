"""The heads of a network run on its encoder features: the viability of each
member in eval mode and its MC-dropout samples (see
:mod:`nvir_agent.model.uncertainty` for what the spread means).

The heads are tiny (512 → 32 → 32 → 32 → 32 → 1); they run in fp32 torch on
the CPU whatever path gave the features, so that 32 dropout passes cost
little next to one encoder pass.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn

from nvir_agent.model.network import ENCODER_FEATURES, heads

__all__ = ["Heads", "mc_dropout"]


class Heads:
    """The heads of a network (one per member), copied to the CPU in fp32 eval mode,
    so that moving the network to a device leaves them where they are."""

    def __init__(self, net: nn.Module) -> None:
        self.heads = [copy.deepcopy(h).float().cpu().eval() for h in heads(net)]

    @property
    def members(self) -> int:
        return len(self.heads)

    @property
    def features(self) -> int:
        """Width of the features they take: 512 per member."""
        return ENCODER_FEATURES * self.members

    def _chunks(self, features: torch.Tensor | np.ndarray) -> list[torch.Tensor]:
        x = torch.as_tensor(features).detach().float().cpu()
        if x.ndim != 2 or x.shape[1] != self.features:
            raise ValueError(f"expected features of shape (N, {self.features}), "
                             f"got {tuple(x.shape)}")
        return list(x.split(ENCODER_FEATURES, dim=1))

    def outputs(self, features: torch.Tensor | np.ndarray) -> np.ndarray:
        """(members, N) eval-mode viabilities."""
        with torch.no_grad():
            return np.stack([h(c).reshape(-1).double().numpy()
                             for h, c in zip(self.heads, self._chunks(features), strict=True)])

    def viability(self, features: torch.Tensor | np.ndarray) -> np.ndarray:
        """(N,) viability: the members' mean (the single head's output for one network)."""
        return self.outputs(features).mean(axis=0)

    def samples(self, features: torch.Tensor | np.ndarray, passes: int,
                seed: int = 0) -> np.ndarray:
        """(members, passes, N) MC-dropout viabilities; member i draws from ``seed + i``."""
        chunks = self._chunks(features)
        if passes <= 0:
            return np.zeros((self.members, 0, chunks[0].shape[0]))
        return np.stack([mc_dropout(h, c, passes, seed=seed + i)
                         for i, (h, c) in enumerate(zip(self.heads, chunks, strict=True))])


def mc_dropout(head: nn.Module, features: torch.Tensor, passes: int = 32,
               seed: int = 0) -> np.ndarray:
    """(passes, N) viabilities of NViR's head with dropout on, from (N, D) features.

    Deterministic for ``seed`` (the dropout masks come from their own generator;
    torch's global random state is untouched).
    """
    gen = torch.Generator().manual_seed(int(seed))
    n = features.shape[0]
    x = features.detach().float().cpu().repeat(passes, 1)
    with torch.no_grad():
        for m in _flat(head):
            if isinstance(m, nn.Dropout):
                if m.p > 0:
                    keep = torch.rand(x.shape, generator=gen) >= m.p
                    x = x * keep / (1.0 - m.p)
            else:
                x = m(x)
    return x.reshape(passes, n).numpy()


def _flat(module: nn.Module) -> list[nn.Module]:
    if isinstance(module, nn.Sequential):
        out: list[nn.Module] = []
        for m in module:
            out += _flat(m)
        return out
    return [module]
