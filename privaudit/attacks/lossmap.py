"""Segmentations-Leak's structured attack (He et al., ECCV 2020): a small CNN that classifies
per-pixel loss maps as member or non-member, trained on a shadow (reference) model's maps of its
own members and non-members, then applied to the target's maps.

The maps come in as (N, 1, s, s) per-pixel losses (``models.seginference.segment``); the CNN reads
``log(1 + loss)`` standardised with the shadow maps' mean and std, so a target whose losses are on
another scale is not misread. Training is seeded, class-balanced (BCE with the non-member/member
ratio as the positive weight) and uses random horizontal flips. The score of a map is the CNN's logit
(higher = more likely a member).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from privaudit import defaults
from privaudit.errors import InputError


class LossMapNet(nn.Module):
    """Three 3x3 conv blocks (16, 32, 64 channels, the first two max-pooled), global average and
    max pooling, one linear layer: (N, 1, s, s) → (N,) logits."""

    def __init__(self, width: int = 16) -> None:
        super().__init__()
        w = width
        self.features = nn.Sequential(
            nn.Conv2d(1, w, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(w, 2 * w, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(2 * w, 4 * w, 3, padding=1), nn.ReLU(),
        )
        self.head = nn.Linear(8 * w, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.features(x)
        pooled = torch.cat([h.mean((2, 3)), h.amax((2, 3))], 1)
        return self.head(pooled).squeeze(1)


@dataclass
class LossMapAttack:
    """A trained loss-map classifier and the standardisation it was trained with."""

    net: LossMapNet
    mean: float
    std: float
    epochs: int
    trained_on: dict[str, int]

    def prepare(self, maps: torch.Tensor) -> torch.Tensor:
        return (torch.log1p(maps.float().clamp_min(0)) - self.mean) / self.std

    @torch.no_grad()
    def score(self, maps: torch.Tensor, batch_size: int = 256) -> np.ndarray:
        """(N,) scores (logits) of (N, 1, s, s) loss maps."""
        self.net.eval()
        x = self.prepare(maps)
        return torch.cat([self.net(x[i : i + batch_size]) for i in range(0, len(x), batch_size)]).double().numpy()

    def describe(self) -> dict[str, object]:
        return {"epochs": self.epochs, "map_size": None, "trained_on": dict(self.trained_on)}


def train_loss_map_attack(member_maps: torch.Tensor, nonmember_maps: torch.Tensor, *, epochs: int = defaults.LOSSMAP_EPOCHS,
                          seed: int = defaults.SEED, batch_size: int = 32, lr: float = 1e-3) -> LossMapAttack:
    """Train the CNN on a shadow model's loss maps of its members (label 1) and non-members (label 0)."""
    if len(member_maps) == 0 or len(nonmember_maps) == 0:
        raise InputError("the loss-map attack needs shadow loss maps of both members and non-members")
    if epochs < 1:
        raise InputError(f"--lossmap-epochs must be at least 1, not {epochs}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        x = torch.cat([member_maps, nonmember_maps]).float()
        y = torch.cat([torch.ones(len(member_maps)), torch.zeros(len(nonmember_maps))])
        logs = torch.log1p(x.clamp_min(0))
        mean, std = float(logs.mean()), float(logs.std().clamp_min(1e-6))
        attack = LossMapAttack(LossMapNet(), mean, std, epochs, {"members": len(member_maps), "nonmembers": len(nonmember_maps)})
        xs = attack.prepare(x)
        net = attack.net
        opt = torch.optim.Adam(net.parameters(), lr=lr, weight_decay=1e-4)
        pos_weight = torch.tensor(len(nonmember_maps) / len(member_maps))
        gen = torch.Generator().manual_seed(seed)
        net.train()
        for _ in range(epochs):
            perm = torch.randperm(len(xs), generator=gen)
            for b in range(0, len(xs), batch_size):
                idx = perm[b : b + batch_size]
                xb = xs[idx]
                if bool(torch.rand(1, generator=gen) < 0.5):
                    xb = xb.flip(-1)
                loss = F.binary_cross_entropy_with_logits(net(xb), y[idx], pos_weight=pos_weight)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
        net.eval()
    return attack
