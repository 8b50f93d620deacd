"""Samples with ground truth: cells (nuclei, mitochondria, membranes + label-free),
SMLM emitters on structures with photophysics, mitochondrial fission events, focus drift.

Everything here is geometry and photophysics in sample coordinates (pixels of the
camera grid, or nm); optics and camera live in :mod:`optics` and :mod:`camera`. Every
generator takes a seed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from pydantic import Field
from scipy import ndimage

from smartscope.base_model import FrozenModel

__all__ = [
    "CHANNELS",
    "CellGeometry",
    "Emitters",
    "FissionEvent",
    "FocusDrift",
    "Photophysics",
    "PhotophysicsState",
    "label_free",
    "make_cells",
    "make_emitters",
    "make_fission_events",
    "splat_tubes",
]

# fluorescence channels of the cell scene: name -> (excitation laser nm, emission nm)
CHANNELS: dict[str, tuple[int, float]] = {
    "nuclei": (488, 520.0),
    "mitochondria": (561, 590.0),
    "membrane": (640, 670.0),
}


# ============================================================================ cells


@dataclass
class CellGeometry:
    """Ground-truth geometry of a cell field on a (Y, X) pixel grid.

    ``density[name]`` is the fluorophore density of each channel (0..~1, float32).
    Mitochondria are also kept as polylines (``mito_y``, ``mito_x`` in pixels, one id per
    point) so dynamic events can move them. ``thickness_um`` and ``phase_rad`` describe
    the same cells for label-free imaging.
    """

    shape: tuple[int, int]
    pixel_size_um: float
    cell_label: np.ndarray  # int32, 0 = background
    nucleus_mask: np.ndarray  # bool
    density: dict[str, np.ndarray]
    thickness_um: np.ndarray
    mito_y: np.ndarray
    mito_x: np.ndarray
    mito_id: np.ndarray
    mito_sigma_px: float
    n_cells: int

    def mito_density(
        self, y: np.ndarray | None = None, x: np.ndarray | None = None, w: np.ndarray | None = None
    ) -> np.ndarray:
        """Render mitochondria points (default: all) to a density image."""
        return splat_tubes(
            self.shape,
            self.mito_y if y is None else y,
            self.mito_x if x is None else x,
            w,
            self.mito_sigma_px,
        )


def splat_tubes(
    shape: tuple[int, int],
    y: np.ndarray,
    x: np.ndarray,
    w: np.ndarray | None,
    sigma_px: float,
    step_px: float = 0.5,
) -> np.ndarray:
    """Points sampled along tubes → density image (bilinear splat + Gaussian tube width)."""
    h, wd = shape
    img = np.zeros(shape, dtype=np.float32)
    if len(y) == 0:
        return img
    weights = np.ones(len(y), np.float32) if w is None else np.asarray(w, np.float32)
    y0 = np.floor(y).astype(np.int64)
    x0 = np.floor(x).astype(np.int64)
    fy = (y - y0).astype(np.float32)
    fx = (x - x0).astype(np.float32)
    flat = img.reshape(-1)
    for dy, dx, ww in (
        (0, 0, (1 - fy) * (1 - fx)),
        (1, 0, fy * (1 - fx)),
        (0, 1, (1 - fy) * fx),
        (1, 1, fy * fx),
    ):
        yy, xx = y0 + dy, x0 + dx
        ok = (yy >= 0) & (yy < h) & (xx >= 0) & (xx < wd)
        np.add.at(flat, yy[ok] * wd + xx[ok], (weights * ww)[ok])
    # line density per pixel of length → peak ≈ 1 for a tube of width ~2.5σ
    img *= step_px / (math.sqrt(2 * math.pi) * sigma_px) * 2.5
    return ndimage.gaussian_filter(img, sigma_px, mode="constant").astype(np.float32)


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    n = ndimage.gaussian_filter(rng.standard_normal(shape), sigma, mode="wrap")
    return (n / (n.std() + 1e-12)).astype(np.float32)


def make_cells(
    shape: tuple[int, int] = (256, 256),
    pixel_size_um: float = 0.1,
    seed: int = 0,
    cell_radius_um: tuple[float, float] = (5.0, 9.0),
    mito_per_cell: int = 40,
) -> CellGeometry:
    """A field of adherent cells: membranes, nuclei with chromatin texture, and tubular
    mitochondria (worm-like chains in the cytoplasm), plus a thickness map for label-free.
    """
    if len(shape) != 2 or min(shape) < 16:
        raise ValueError(f"shape={shape} must be 2D and at least 16×16")
    rng = np.random.default_rng(seed)
    h, w = shape
    px = pixel_size_um
    r_lo, r_hi = (r / px for r in cell_radius_um)
    area = h * w
    n_cells = max(2, round(2.2 * area / (math.pi * ((r_lo + r_hi) / 2) ** 2)))
    n_cells = min(n_cells, 600)
    best = np.full(shape, np.inf, np.float32)
    label = np.zeros(shape, np.int32)
    nuc_d = np.full(shape, np.inf, np.float32)
    for c in range(n_cells):
        cy, cx = rng.uniform(-0.05, 1.05) * h, rng.uniform(-0.05, 1.05) * w
        r = rng.uniform(r_lo, r_hi)
        ecc = rng.uniform(0.7, 1.0)
        ang = rng.uniform(0, np.pi)
        harm = rng.normal(0, 0.06, size=(3, 2))
        nr = r * rng.uniform(0.32, 0.42)
        ncy = cy + rng.normal(0, 0.12) * r
        ncx = cx + rng.normal(0, 0.12) * r
        n_ecc = rng.uniform(0.75, 1)
        # work in the cell's bounding box (d > 1.3 beyond it)
        half = 2.0 * r
        y0, y1 = max(0, int(cy - half)), min(h, int(cy + half) + 1)
        x0, x1 = max(0, int(cx - half)), min(w, int(cx + half) + 1)
        if y0 >= y1 or x0 >= x1:
            continue
        yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
        dy, dx = yy - cy, xx - cx
        th = np.arctan2(dy, dx)
        rr = 1.0 + sum(
            harm[k, 0] * np.cos((k + 2) * th) + harm[k, 1] * np.sin((k + 2) * th) for k in range(3)
        )
        u = dx * np.cos(ang) + dy * np.sin(ang)
        v = -dx * np.sin(ang) + dy * np.cos(ang)
        d = np.sqrt((u / r) ** 2 + (v / (r * ecc)) ** 2) / rr
        box = (slice(y0, y1), slice(x0, x1))
        take = d < best[box]
        best[box] = np.where(take, d, best[box])
        label[box] = np.where(take & (d < 1), c + 1, label[box])
        nd = np.sqrt(((xx - ncx) / nr) ** 2 + ((yy - ncy) / (nr * n_ecc)) ** 2)
        nuc_d[box] = np.where(take, nd, nuc_d[box])
    inside = label > 0
    nucleus = inside & (nuc_d < 1)
    # membranes: a rim at the normalised boundary d = 1 (≈ 1.5 px wide)
    r_mean = (r_lo + r_hi) / 2
    dist_px = (1 - best) * r_mean
    membrane = np.exp(-0.5 * (dist_px / 1.5) ** 2) * (best < 1.15)
    # cell-cell contacts: edges of the label map
    edges = ndimage.morphological_gradient(label, size=3) > 0
    membrane = np.maximum(membrane, ndimage.gaussian_filter(edges.astype(np.float32), 1.0) * 2)
    membrane = np.clip(membrane, 0, 1).astype(np.float32)
    # nuclei with chromatin texture and nucleoli
    tex = _smooth_noise(rng, shape, 2.0 / (px / 0.1))
    nuc = nucleus * np.clip(0.75 + 0.15 * tex, 0.2, 1.0)
    nuc = ndimage.gaussian_filter(nuc.astype(np.float32), 0.8)
    # mitochondria: worm-like chains in the cytoplasm
    cyto = inside & ~ndimage.binary_dilation(nucleus, iterations=2)
    my, mx, mid = [], [], []
    step = 0.5
    tid = 0
    cyto_lab = np.where(cyto, label, 0).ravel()
    order = np.argsort(cyto_lab, kind="stable")
    bounds = np.searchsorted(cyto_lab[order], np.arange(n_cells + 2))
    for _c in range(n_cells):
        cyto_idx = order[bounds[_c + 1] : bounds[_c + 2]]
        if cyto_idx.size == 0:
            continue
        for _ in range(mito_per_cell):
            start = cyto_idx[rng.integers(cyto_idx.size)]
            y, x = divmod(int(start), w)
            length_px = rng.uniform(1.5, 6.0) / px
            n_steps = int(length_px / step)
            phi = rng.uniform(0, 2 * np.pi)
            dphi = rng.normal(0, 0.08, size=n_steps).cumsum()
            ys = y + np.cumsum(step * np.sin(phi + dphi))
            xs = x + np.cumsum(step * np.cos(phi + dphi))
            iy = np.clip(ys.astype(np.int64), 0, h - 1)
            ix = np.clip(xs.astype(np.int64), 0, w - 1)
            ok = cyto[iy, ix] & (label[iy, ix] == _c + 1)
            stop = np.argmin(ok) if not ok.all() else n_steps
            if stop < 6:
                continue
            my.append(ys[:stop])
            mx.append(xs[:stop])
            mid.append(np.full(stop, tid, np.int32))
            tid += 1
    mito_y = np.concatenate(my) if my else np.zeros(0)
    mito_x = np.concatenate(mx) if mx else np.zeros(0)
    mito_id = np.concatenate(mid) if mid else np.zeros(0, np.int32)
    sigma_px = max(0.6, 0.12 / px)  # tube radius ≈ 120–150 nm
    mito = splat_tubes(shape, mito_y, mito_x, None, sigma_px)
    mito = np.clip(mito, 0, 1.5).astype(np.float32)
    # thickness: a dome per cell, nucleus bulges
    thick = np.where(inside, 1.5 * np.sqrt(np.clip(1 - best**2, 0, 1)) + 0.3, 0.0)
    thick = thick + 1.0 * np.sqrt(np.clip(1 - nuc_d**2, 0, 1)) * nucleus
    thick = ndimage.gaussian_filter(thick.astype(np.float32), 1.0)
    return CellGeometry(
        shape=(h, w),
        pixel_size_um=px,
        cell_label=label,
        nucleus_mask=nucleus,
        density={"nuclei": nuc, "mitochondria": mito, "membrane": membrane},
        thickness_um=thick.astype(np.float32),
        mito_y=mito_y,
        mito_x=mito_x,
        mito_id=mito_id,
        mito_sigma_px=float(sigma_px),
        n_cells=n_cells,
    )


def label_free(
    geom: CellGeometry,
    mode: Literal["phase", "brightfield"] = "phase",
    wavelength_nm: float = 550.0,
    na: float = 0.9,
    defocus_um: float = 1.0,
    mito_density: np.ndarray | None = None,
    focus_offset_um: float = 0.0,
) -> np.ndarray:
    """Transmitted-light image of the same cells (float32, background = 1).

    The cells are a thin phase object: φ = 2π/λ · Σ Δn·t over cytoplasm (Δn 0.03),
    nucleus (+0.01 over cytoplasm) and mitochondria (+0.02), with weak absorption.
    ``phase``: positive Zernike phase contrast (denser objects darker) — the undiffracted
    light (a small disk around zero frequency) is retarded by π/2 and attenuated to
    25 %, then coherent imaging
    through the objective pupil, I = |E_img|². ``brightfield``: the in-focus phase object
    is nearly invisible, so it is imaged slightly defocused (``defocus_um``), where
    phase gradients turn into intensity (transport of intensity).
    """
    lam_um = wavelength_nm * 1e-3
    px = geom.pixel_size_um
    mito = geom.density["mitochondria"] if mito_density is None else mito_density
    opd_um = (
        0.03 * geom.thickness_um
        + 0.01 * geom.nucleus_mask * geom.thickness_um
        + 0.02 * 0.3 * np.clip(mito, 0, 1)
    )
    phi = 2 * np.pi * opd_um / lam_um
    absorb = 0.02 * geom.thickness_um / 3
    pad = 32
    e = np.pad(np.exp(1j * phi - absorb), pad, mode="reflect")
    h, w = e.shape
    fy = np.fft.fftfreq(h, d=px)[:, None]
    fx = np.fft.fftfreq(w, d=px)[None, :]
    fr = np.hypot(fy, fx)
    pupil = (fr <= na / lam_um).astype(np.complex128)
    spec = np.fft.fft2(e)
    if mode == "phase":
        ring = fr <= 0.02 / lam_um + 1.5 / (max(h, w) * px)
        spec = np.where(ring, spec * 0.25 * -1j, spec)  # positive phase contrast
    elif mode != "brightfield":
        raise ValueError(f"label-free mode must be 'phase' or 'brightfield', got {mode!r}")
    dz_um = focus_offset_um + (defocus_um if mode == "brightfield" else 0.0)
    if dz_um:
        kz = np.sqrt(np.maximum((1.0 / lam_um) ** 2 - fr**2, 0))
        pupil = pupil * np.exp(2j * np.pi * dz_um * kz)
    img = np.abs(np.fft.ifft2(spec * pupil))[pad:-pad, pad:-pad] ** 2
    if mode == "phase":
        img = img / 0.0625  # background of a phase-contrast image = attenuation²
    return img.astype(np.float32)


# ============================================================================ events


@dataclass(frozen=True)
class FissionEvent:
    """A mitochondrial constriction that ends in fission, with its ground truth."""

    event_id: int
    tube_id: int
    site_index: int  # index into the geometry's mito points
    y_px: float
    x_px: float
    onset_s: float
    fission_s: float  # onset + constriction time
    kind: str = "mito_fission"

    def as_row(self, pixel_size_um: float) -> dict[str, float | int | str]:
        return {
            "event_id": self.event_id,
            "kind": self.kind,
            "tube_id": self.tube_id,
            "y_px": self.y_px,
            "x_px": self.x_px,
            "y_um": self.y_px * pixel_size_um,
            "x_um": self.x_px * pixel_size_um,
            "onset_s": self.onset_s,
            "fission_s": self.fission_s,
        }


def make_fission_events(
    geom: CellGeometry,
    duration_s: float,
    rate_per_s: float = 0.2,
    constriction_s: tuple[float, float] = (2.0, 5.0),
    seed: int = 0,
    min_count: int = 1,
) -> list[FissionEvent]:
    """Fission events on long tubes at Poisson-random onset times in ``[0, duration_s)``."""
    rng = np.random.default_rng(seed)
    ids, counts = np.unique(geom.mito_id, return_counts=True)
    long_tubes = ids[counts >= 16]
    if long_tubes.size == 0:
        return []
    n = max(min_count, int(rng.poisson(rate_per_s * duration_s)))
    n = min(n, long_tubes.size)
    tubes = rng.choice(long_tubes, size=n, replace=False)
    onsets = np.sort(rng.uniform(0.05 * duration_s, 0.8 * duration_s, size=n))
    events = []
    for k, (tube, t0) in enumerate(zip(tubes, onsets, strict=True)):
        pts = np.flatnonzero(geom.mito_id == tube)
        site = int(pts[len(pts) // 4 + rng.integers(max(1, len(pts) // 2))])
        events.append(
            FissionEvent(
                event_id=k,
                tube_id=int(tube),
                site_index=site,
                y_px=float(geom.mito_y[site]),
                x_px=float(geom.mito_x[site]),
                onset_s=float(t0),
                fission_s=float(t0 + rng.uniform(*constriction_s)),
            )
        )
    return events


def fission_points(
    geom: CellGeometry, events: list[FissionEvent], t_s: float, retract_um_per_s: float = 0.15
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mitochondria points at time ``t_s`` with every event applied: (y, x, weight).

    Before onset nothing changes. During constriction the tube thins at the site: the
    weight of points within ~300 nm falls linearly to 15 %. At fission the points within
    200 nm vanish and both halves retract from the site along the tube.
    """
    y = geom.mito_y.copy()
    x = geom.mito_x.copy()
    wgt = np.ones(len(y), np.float32)
    px = geom.pixel_size_um
    for ev in events:
        if t_s < ev.onset_s:
            continue
        pts = np.flatnonzero(geom.mito_id == ev.tube_id)
        s = (pts - ev.site_index) * 0.5 * px  # arc length from the site, µm
        if t_s < ev.fission_s:
            prog = (t_s - ev.onset_s) / (ev.fission_s - ev.onset_s)
            near = np.abs(s) < 0.3
            wgt[pts[near]] *= 1 - 0.85 * prog * (1 - np.abs(s[near]) / 0.3)
        else:
            gone = np.abs(s) < 0.2
            wgt[pts[gone]] = 0
            d_um = min(1.0, retract_um_per_s * (t_s - ev.fission_s))
            # move each half away from the site along its local direction
            for side in (-1, 1):
                sel = pts[(np.sign(s) == side) & ~gone]
                if sel.size == 0:
                    continue
                ref = sel[0] if side == 1 else sel[-1]
                dy = geom.mito_y[ref] - ev.y_px
                dx = geom.mito_x[ref] - ev.x_px
                nrm = math.hypot(dy, dx) + 1e-9
                y[sel] += dy / nrm * d_um / px
                x[sel] += dx / nrm * d_um / px
    return y, x, wgt


# ============================================================================ drift


class FocusDrift(FrozenModel):
    """Slow focus drift: linear creep plus an Ornstein–Uhlenbeck wander (µm)."""

    rate_um_per_s: float = Field(default=0.0, description="linear creep")
    wander_um: float = Field(default=0.0, ge=0, description="stationary RMS of the wander")
    wander_tau_s: float = Field(default=30.0, gt=0, description="correlation time of the wander")
    seed: int = 0

    def offset_um(self, t_s: np.ndarray | float) -> np.ndarray:
        """Sample-plane offset along z at times ``t_s`` (deterministic given the seed).

        The wander is a sum of 16 random sinusoids whose spectrum approximates the OU
        Lorentzian, so any time can be queried in any order.
        """
        t = np.asarray(t_s, dtype=np.float64)
        out = self.rate_um_per_s * t
        if self.wander_um > 0:
            rng = np.random.default_rng(self.seed)
            f = np.abs(rng.standard_cauchy(16)) / (2 * np.pi * self.wander_tau_s)
            ph = rng.uniform(0, 2 * np.pi, 16)
            out = out + self.wander_um * np.sqrt(2 / 16) * np.sum(
                np.cos(2 * np.pi * f[:, None] * t.reshape(1, -1) + ph[:, None]), axis=0
            ).reshape(t.shape)
        return np.asarray(out)


# ============================================================================ SMLM


@dataclass
class Emitters:
    """Fluorophore positions, nm in the sample plane; origin at the top-left corner of
    pixel (0, 0), so pixel ``i`` spans ``[i·a, (i+1)·a)`` and its centre is ``(i+0.5)·a``."""

    x_nm: np.ndarray
    y_nm: np.ndarray
    z_nm: np.ndarray
    structure_id: np.ndarray

    def __len__(self) -> int:
        return len(self.x_nm)


def make_emitters(
    kind: Literal["filaments", "rings", "clusters", "mixed"],
    fov_nm: tuple[float, float],
    seed: int = 0,
    density_per_um: float = 40.0,
    margin_nm: float = 300.0,
) -> Emitters:
    """Emitters on structures: filaments (worm-like chains, labels every 1/density µm),
    rings (nuclear-pore-like, 8 corners of 2 labels on a 55 nm radius), clusters (Gaussian,
    σ = 30 nm). ``fov_nm`` = (height, width)."""
    rng = np.random.default_rng(seed)
    hgt, wid = fov_nm
    xs: list[np.ndarray] = []
    ys: list[np.ndarray] = []
    zs: list[np.ndarray] = []
    sid: list[np.ndarray] = []
    area_um2 = hgt * wid * 1e-6
    kinds = ["filaments", "rings", "clusters"] if kind == "mixed" else [kind]
    if kind not in ("filaments", "rings", "clusters", "mixed"):
        raise ValueError(f"structure kind must be filaments/rings/clusters/mixed, got {kind!r}")
    k_struct = 0
    for kd in kinds:
        scale = 1.0 / len(kinds)
        if kd == "filaments":
            n_fil = max(1, round(scale * area_um2 / 20))
            for _ in range(n_fil):
                length = rng.uniform(3000, 12000)
                step = 1000.0 / density_per_um
                n = int(length / step)
                phi = rng.uniform(0, 2 * np.pi) + np.cumsum(rng.normal(0, 0.02, n))
                x = rng.uniform(margin_nm, wid - margin_nm) + np.cumsum(step * np.cos(phi))
                y = rng.uniform(margin_nm, hgt - margin_nm) + np.cumsum(step * np.sin(phi))
                # label linker displacement (antibody ≈ 10 nm)
                x = x + rng.normal(0, 8, n)
                y = y + rng.normal(0, 8, n)
                xs.append(x)
                ys.append(y)
                zs.append(rng.normal(0, 20, n))
                sid.append(np.full(n, k_struct))
                k_struct += 1
        elif kd == "rings":
            n_ring = max(1, round(scale * area_um2 * 1.5))
            for _ in range(n_ring):
                cx = rng.uniform(margin_nm, wid - margin_nm)
                cy = rng.uniform(margin_nm, hgt - margin_nm)
                a0 = rng.uniform(0, 2 * np.pi)
                corners = a0 + np.arange(8) * np.pi / 4
                keep = rng.random(8) < 0.8  # labelling efficiency
                a = np.repeat(corners[keep], 2)
                xs.append(cx + 55 * np.cos(a) + rng.normal(0, 5, a.size))
                ys.append(cy + 55 * np.sin(a) + rng.normal(0, 5, a.size))
                zs.append(rng.normal(0, 5, a.size))
                sid.append(np.full(a.size, k_struct))
                k_struct += 1
        else:
            n_cl = max(1, round(scale * area_um2 * 1.0))
            for _ in range(n_cl):
                n = int(rng.integers(5, 30))
                cx = rng.uniform(margin_nm, wid - margin_nm)
                cy = rng.uniform(margin_nm, hgt - margin_nm)
                xs.append(cx + rng.normal(0, 30, n))
                ys.append(cy + rng.normal(0, 30, n))
                zs.append(rng.normal(0, 30, n))
                sid.append(np.full(n, k_struct))
                k_struct += 1
    x_all = np.concatenate(xs)
    y_all = np.concatenate(ys)
    ok = (x_all > 0) & (x_all < wid) & (y_all > 0) & (y_all < hgt)
    return Emitters(
        x_nm=x_all[ok],
        y_nm=y_all[ok],
        z_nm=np.concatenate(zs)[ok],
        structure_id=np.concatenate(sid)[ok].astype(np.int32),
    )


class Photophysics(FrozenModel):
    """Rates of a photoswitchable dye (continuous-time three-state model).

    off → on: ``k_act = k_act_spont_per_s + k_act_per_s_per_mw405 · P405``
    on → off: ``k_off = k_off_per_s_per_mw · P_exc`` (excitation drives switching off)
    on → bleached: ``k_bleach = k_bleach_per_s_per_mw · P_exc`` (bleaching grows with light)
    An on emitter yields ``photons_per_ms_per_mw · P_exc`` detected photons per ms.
    """

    k_act_spont_per_s: float = Field(default=0.002, ge=0)
    k_act_per_s_per_mw405: float = Field(default=0.05, ge=0)
    k_off_per_s_per_mw: float = Field(default=0.2, ge=0)
    k_bleach_per_s_per_mw: float = Field(default=0.01, ge=0)
    photons_per_ms_per_mw: float = Field(default=3.0, gt=0)
    start_on: bool = Field(default=True, description="all emitters start fluorescent (then pumped off)")


def _exp_times(rng: np.random.Generator, rate: float, n: int) -> np.ndarray:
    return rng.exponential(1 / rate, n) if rate > 0 else np.full(n, np.inf)


@dataclass
class PhotophysicsState:
    """State per emitter: 0 off (activatable), 1 on, 2 bleached."""

    state: np.ndarray
    on_frames: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))

    @classmethod
    def initial(cls, n: int, pp: Photophysics) -> PhotophysicsState:
        st = np.full(n, 1 if pp.start_on else 0, np.int8)
        return cls(state=st, on_frames=np.zeros(n, np.int32))

    def step(
        self,
        pp: Photophysics,
        dt_s: float,
        excitation_mw: float,
        activation_mw: float,
        rng: np.random.Generator,
    ) -> np.ndarray:
        """Advance one frame of length ``dt_s``; returns the on-time fraction per emitter.

        Exact for up to two transitions per emitter per frame (off→on→off/bleach, or
        on→off/bleach); each waiting time is exponential with the current rates.
        """
        k_act = pp.k_act_spont_per_s + pp.k_act_per_s_per_mw405 * max(activation_mw, 0.0)
        k_off = pp.k_off_per_s_per_mw * max(excitation_mw, 0.0)
        k_bl = pp.k_bleach_per_s_per_mw * max(excitation_mw, 0.0)
        k_leave = k_off + k_bl
        st = self.state
        n = st.size
        on_time = np.zeros(n, np.float64)
        new = st.copy()
        p_bleach = k_bl / k_leave if k_leave > 0 else 0.0
        # emitters on at frame start
        on = np.flatnonzero(st == 1)
        if on.size:
            t_leave = _exp_times(rng, k_leave, on.size)
            left = t_leave < dt_s
            on_time[on] = np.minimum(t_leave, dt_s)
            idx = on[left]
            new[idx] = np.where(rng.random(idx.size) < p_bleach, 2, 0)
        # emitters off at frame start
        off = np.flatnonzero(st == 0)
        if off.size and k_act > 0:
            t_act = rng.exponential(1 / k_act, off.size)
            act = t_act < dt_s
            idx = off[act]
            remaining = dt_s - t_act[act]
            t_leave = _exp_times(rng, k_leave, idx.size)
            left = t_leave < remaining
            on_time[idx] = np.minimum(t_leave, remaining)
            new[idx] = 1
            left_idx = idx[left]
            new[left_idx] = np.where(rng.random(left_idx.size) < p_bleach, 2, 0)
        self.state = new
        self.on_frames += (on_time > 0).astype(np.int32)
        return on_time / dt_s
