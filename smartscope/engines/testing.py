"""Helpers for tests and benchmarks: a randomly initialised U-Net exported as a bundle."""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["make_test_bundle", "unet_manifest_fields"]


def unet_manifest_fields(
    *,
    name: str,
    task: str,
    arch_params: dict[str, Any],
    input_channels: list[str],
    output_channels: list[str],
    output_name: str = "output",
    denormalize: bool = True,
    offset_adu: float = 100.0,
    scale_adu: float = 100.0,
    tile_px: int = 128,
    overlap_px: int = 32,
    provenance: dict[str, Any] | None = None,
    metrics: dict[str, float] | None = None,
    pixel_size_um: float | None = None,
    normalization: str = "affine",
) -> dict[str, Any]:
    """Manifest fields for a single-input U-Net engine (affine normalization)."""
    depth = int(arch_params.get("depth", 2))
    return {
        "name": name,
        "task": task,
        "inputs": [{"name": "input", "channels": input_channels}],
        "outputs": [{"name": output_name, "channels": output_channels, "denormalize": denormalize}],
        "normalization": {"kind": normalization, "offset_adu": offset_adu, "scale_adu": scale_adu},
        "tile": {"size_px": tile_px, "overlap_px": overlap_px, "multiple_px": 2**depth},
        "architecture": {"name": "unet2d", "params": arch_params},
        "provenance": provenance or {"command": "make_test_bundle", "data": "none (random init)"},
        "metrics": metrics or {},
        "pixel_size_um": pixel_size_um,
    }


def make_test_bundle(
    out: str | Path,
    *,
    seed: int = 0,
    in_channels: int = 1,
    out_channels: int = 1,
    depth: int = 2,
    base_width: int = 8,
    tile_px: int = 64,
    overlap_px: int = 16,
    as_zip: bool = False,
    normalization: str = "affine",
) -> Path:
    """Export a randomly initialised (seeded) U-Net as a verified bundle."""
    import torch

    from smartscope.engines.export import export_bundle
    from smartscope.engines.networks.unet import UNet2D, UNetConfig

    torch.manual_seed(seed)
    cfg = UNetConfig(
        residual=False,
        in_channels=in_channels,
        out_channels=out_channels,
        depth=depth,
        base_width=base_width,
    )
    module = UNet2D(cfg)
    with torch.no_grad():  # variance-preserving init so the output really depends on the input
        for m in module.modules():
            if isinstance(m, torch.nn.Conv2d):
                torch.nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                if m.bias is not None:
                    torch.nn.init.normal_(m.bias, std=0.1)
    fields = unet_manifest_fields(
        name=f"random-unet-{seed}",
        task="denoise" if in_channels == out_channels else "test",
        arch_params=cfg.model_dump(),
        input_channels=[f"c{i}" for i in range(in_channels)],
        output_channels=[f"c{i}" for i in range(out_channels)],
        output_name="denoised",
        tile_px=tile_px,
        overlap_px=overlap_px,
        provenance={
            "command": "smartscope.engines.testing.make_test_bundle",
            "data": "none",
            "seed": seed,
        },
        normalization=normalization,
    )
    return export_bundle(module, out, manifest_fields=fields, as_zip=as_zip)
