"""pix2pix's PatchGAN discriminator, which trains the virtual-staining generator
(:mod:`smartscope.engines.networks.stain`) adversarially.

The discriminator (Isola et al. 2017) scores overlapping patches of ``(input, image)``
pairs: 4×4 convolutions, stride 2, LeakyReLU(0.2), then a 1-channel map of logits, each
judging a ~70 px receptive field with 3 down-samplings.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["PatchDiscriminator"]


class PatchDiscriminator(nn.Module):
    """PatchGAN: ``(condition, image)`` → a map of real/fake logits, one per patch."""

    def __init__(self, in_channels: int, width: int = 32, n_down: int = 3) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        cin, cout = in_channels, width
        for i in range(n_down):
            layers.append(nn.Conv2d(cin, cout, 4, stride=2, padding=1, bias=i == 0))
            if i > 0:
                layers.append(nn.BatchNorm2d(cout))
            layers.append(nn.LeakyReLU(0.2, inplace=True))
            cin, cout = cout, min(cout * 2, 8 * width)
        layers += [
            nn.Conv2d(cin, cout, 4, stride=1, padding=1, bias=False),
            nn.BatchNorm2d(cout),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(cout, 1, 4, stride=1, padding=1),
        ]
        self.net = nn.Sequential(*layers)

    def forward(self, condition: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([condition, image], dim=1))
