"""CARE (Weigert et al. 2018): supervised restoration from paired low/high-SNR images."""

from __future__ import annotations

from typing import Literal

import torch

__all__ = ["care_loss"]


def care_loss(pred: torch.Tensor, target: torch.Tensor, kind: Literal["mse", "mae"] = "mse") -> torch.Tensor:
    """Pixel-wise loss against the high-SNR target (MSE maximises PSNR; MAE is robust)."""
    if pred.shape != target.shape:
        raise ValueError(f"prediction {tuple(pred.shape)} vs target {tuple(target.shape)}")
    diff = pred - target
    return (diff * diff).mean() if kind == "mse" else diff.abs().mean()
