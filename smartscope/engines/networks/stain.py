"""The virtual-staining generator (architecture ``stain_generator``): pix2pix's U-Net.

The generator's input channels are, in order::

    label_free, [label_free@<dz>um ...], <fluorescence 1..C>, mask:<fluorescence 1..C>

``label_free@<dz>um``: the label-free frame again with the focus moved by ``dz`` µm (a
defocus pair such as -1/+1 µm; ``planes_um`` in the config, none by default): out-of-focus
planes turn the phase of small, weakly refracting structures into intensity.

``mask:k`` is 1 where fluorescence channel ``k`` was acquired and is given to the network,
0 where it must be predicted. The generator multiplies each given channel by its mask
before the U-Net sees it, so whatever a caller puts in a missing channel is ignored. All
masks 0 is the label-free → fluorescence mode; some masks 1 is channel completion (the
thesis's second mode). A generator built with ``completion=False`` takes the label-free
channel only. Outputs: the C fluorescence channels in normalized target units.

The PatchGAN discriminator that trains it is in :mod:`smartscope.models.stain.network`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from pydantic import Field
from torch import nn

from smartscope.base_model import FrozenModel
from smartscope.engines.networks import NETWORKS, register_network
from smartscope.engines.networks.unet import UNet2D, UNetConfig

__all__ = ["ARCHITECTURE", "StainGenerator", "StainNetConfig", "input_channel_names", "plane_name"]

ARCHITECTURE = "stain_generator"


class StainNetConfig(FrozenModel):
    """Architecture of :class:`StainGenerator`; stored verbatim in ``engine.json``."""

    channels: list[str] = Field(min_length=1, description="fluorescence channels predicted")
    completion: bool = Field(default=True, description="also accept given channels + masks")
    planes_um: list[float] = Field(
        default_factory=list, description="extra label-free planes: focus offsets, µm (e.g. [-1, 1])"
    )
    depth: int = Field(default=3, ge=1, le=6)
    base_width: int = Field(default=16, ge=2)
    norm: str = Field(
        default="group",
        pattern="^(none|batch|group)$",
        description="group: per-sample statistics. Batch norm's running averages mix the "
        "mask patterns of training batches and served channel completion badly (measured)",
    )

    @property
    def in_channels(self) -> int:
        return len(input_channel_names(self.channels, self.completion, self.planes_um))

    @property
    def label_free_planes(self) -> int:
        """Label-free input channels: the in-focus frame and the extra planes."""
        return 1 + len(self.planes_um)

    def unet(self) -> UNetConfig:
        return UNetConfig(
            in_channels=self.in_channels,
            out_channels=len(self.channels),
            depth=self.depth,
            base_width=self.base_width,
            norm=self.norm,  # type: ignore[arg-type]  # validated by the pattern above
        )


def plane_name(dz_um: float) -> str:
    """Input channel name of the label-free frame ``dz_um`` from focus."""
    return f"label_free@{dz_um:+g}um"


def input_channel_names(channels: list[str], completion: bool, planes_um: Sequence[float] = ()) -> list[str]:
    """The generator's input channel names (see the module docstring)."""
    lf = ["label_free", *(plane_name(z) for z in planes_um)]
    if not completion:
        return lf
    return [*lf, *channels, *[f"mask:{c}" for c in channels]]


class StainGenerator(nn.Module):
    """U-Net generator; given fluorescence channels are gated by their masks."""

    def __init__(self, config: StainNetConfig) -> None:
        super().__init__()
        self.config = config
        self.n_channels = len(config.channels)
        self.unet = UNet2D(config.unet())

    @property
    def size_multiple(self) -> int:
        return self.unet.size_multiple

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.config.completion:
            c, p = self.n_channels, self.config.label_free_planes
            label_free = x[:, :p]
            given = x[:, p : p + c]
            mask = x[:, p + c : p + 2 * c]
            x = torch.cat([label_free, given * mask, mask], dim=1)
        return self.unet(x)


def _build(params: dict[str, Any]) -> nn.Module:
    return StainGenerator(StainNetConfig(**params))


if ARCHITECTURE not in NETWORKS:
    register_network(ARCHITECTURE, _build)
