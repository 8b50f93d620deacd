"""N2V blind-spot masking, CARE loss, held-out splitting, early stopping."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from smartscope.models.denoise.network import care_loss, n2v_loss, n2v_mask
from smartscope.models.train_common import EarlyStopping, split_fovs


def test_mask_replaces_with_a_true_neighbour_never_itself() -> None:
    # unique values per pixel so every replacement can be traced back to its source
    b, h, w = 3, 32, 40
    x = torch.arange(b * h * w, dtype=torch.float32).reshape(b, 1, h, w)
    xin, mask = n2v_mask(x, fraction=1 / 16, generator=torch.Generator().manual_seed(0), radius=2)
    assert mask.dtype == torch.bool and mask.shape == (b, 1, h, w)
    # one masked pixel per 4x4 box
    assert int(mask.sum()) == b * (h // 4) * (w // 4)
    assert torch.equal(xin[~mask], x[~mask])  # unmasked pixels untouched
    bi, _, ys, xs = torch.nonzero(mask, as_tuple=True)
    src = xin[bi, 0, ys, xs].long() - bi * h * w
    sy, sx = src // w, src % w
    assert torch.all(src // (h * w) == 0)  # from the same patch
    dist = torch.maximum((sy - ys).abs(), (sx - xs).abs())
    assert torch.all(dist >= 1) and torch.all(dist <= 2)  # a neighbour, never itself


def test_mask_is_seeded_and_stratified() -> None:
    x = torch.randn(2, 1, 64, 64)
    a = n2v_mask(x, 0.02, torch.Generator().manual_seed(5))
    b = n2v_mask(x, 0.02, torch.Generator().manual_seed(5))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    box = round(0.02**-0.5)  # 7 px
    m = a[1][0, 0].numpy()
    counts = [m[y : y + box, x : x + box].sum() for y in range(0, 63, box) for x in range(0, 63, box)]
    assert all(c == 1 for c in counts)
    with pytest.raises(ValueError, match="fraction"):
        n2v_mask(x, 0.0, torch.Generator())


def test_n2v_loss_counts_masked_pixels_only() -> None:
    target = torch.zeros(1, 1, 8, 8)
    pred = torch.ones(1, 1, 8, 8)
    mask = torch.zeros(1, 1, 8, 8, dtype=torch.bool)
    mask[0, 0, 2, 3] = True
    pred[0, 0, 2, 3] = 3.0
    assert float(n2v_loss(pred, target, mask)) == pytest.approx(9.0)


def test_blind_spot_minimiser_is_the_mean() -> None:
    """Regressing masked noisy pixels from their neighbours converges to the clean value:
    for a constant image, the optimal constant prediction is the noise mean (clean)."""
    rng = np.random.default_rng(0)
    clean = 7.0
    x = torch.from_numpy(rng.poisson(clean, (16, 1, 32, 32)).astype(np.float32))
    c = torch.zeros((), requires_grad=True)
    opt = torch.optim.SGD([c], lr=0.2)
    gen = torch.Generator().manual_seed(1)
    for _ in range(200):
        _, mask = n2v_mask(x, 0.05, gen)
        loss = n2v_loss(c.expand_as(x), x, mask)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(c.detach()) == pytest.approx(clean, abs=0.15)


def test_care_loss() -> None:
    a, b = torch.full((2, 1, 4, 4), 2.0), torch.zeros(2, 1, 4, 4)
    assert float(care_loss(a, b, "mse")) == 4.0 and float(care_loss(a, b, "mae")) == 2.0
    with pytest.raises(ValueError, match="vs target"):
        care_loss(a, b[:, :, :2])


def test_split_is_by_whole_fov() -> None:
    tr, va = split_fovs(10, 0.2, seed=3)
    assert len(va) == 2 and len(tr) == 8 and not set(tr) & set(va)
    assert sorted(tr + va) == list(range(10))
    assert split_fovs(10, 0.2, seed=3) == (tr, va)
    with pytest.raises(ValueError, match=">= 2 fields"):
        split_fovs(1, 0.2, 0)


def test_early_stopping() -> None:
    es = EarlyStopping(patience=2)
    assert not es.update(1.0, 10)
    assert not es.update(0.5, 20)
    assert not es.update(0.6, 30)
    assert es.update(0.7, 40)
    assert es.best == 0.5 and es.best_step == 20
