"""Localization tables and their CSV writers, ThunderSTORM-compatible.

A :class:`LocTable` holds one numpy column per field, one row per localization:
``frame`` (0-based), ``x_nm``, ``y_nm`` (origin at the outer corner of pixel (0, 0)),
``z_nm`` (height above the focal plane; NaN for 2-D localization), ``photons`` and ``bg``
(detected photons; ``bg`` per pixel), ``sigma_x_nm``, ``sigma_y_nm``, ``sigma_z_nm``
(localization uncertainties, 1 s.d.), ``prob`` (detection probability) and
``psf_sigma_nm`` (fitted/assumed PSF width). ``z_nm``, ``sigma_z_nm`` and ``psf_sigma_nm``
may be left out (NaN).

The ThunderSTORM CSV uses ThunderSTORM's own column names (as its export writes them and
Picasso's ``import_ts`` expects them): ``uncertainty_xy [nm]``; with z, ``z [nm]``,
``sigma1 [nm]``, ``sigma2 [nm]`` (the two PSF widths of an astigmatic fit: here both the one
width the table has) and ``uncertainty_z [nm]``. x and y count from the outer corner of
pixel (0, 0), as ThunderSTORM (ImageJ) does.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from smartscope.exceptions import InvalidValue

__all__ = ["COLUMNS", "OPTIONAL_COLUMNS", "THUNDERSTORM_HEADER", "THUNDERSTORM_Z_HEADER", "LocTable"]

COLUMNS: tuple[str, ...] = (
    "frame",
    "x_nm",
    "y_nm",
    "z_nm",
    "photons",
    "bg",
    "sigma_x_nm",
    "sigma_y_nm",
    "sigma_z_nm",
    "prob",
    "psf_sigma_nm",
)
OPTIONAL_COLUMNS: tuple[str, ...] = ("z_nm", "sigma_z_nm", "psf_sigma_nm")
THUNDERSTORM_HEADER: tuple[str, ...] = (
    "id",
    "frame",
    "x [nm]",
    "y [nm]",
    "sigma [nm]",
    "intensity [photon]",
    "offset [photon]",
    "bkgstd [photon]",
    "uncertainty_xy [nm]",
)
THUNDERSTORM_Z_HEADER: tuple[str, ...] = (  # ThunderSTORM's 3-D (astigmatism) export
    "id",
    "frame",
    "x [nm]",
    "y [nm]",
    "z [nm]",
    "sigma1 [nm]",
    "sigma2 [nm]",
    "intensity [photon]",
    "offset [photon]",
    "bkgstd [photon]",
    "uncertainty_xy [nm]",
    "uncertainty_z [nm]",
)


@dataclass(frozen=True, slots=True)
class LocTable:
    frame: np.ndarray
    x_nm: np.ndarray
    y_nm: np.ndarray
    z_nm: np.ndarray
    photons: np.ndarray
    bg: np.ndarray
    sigma_x_nm: np.ndarray
    sigma_y_nm: np.ndarray
    sigma_z_nm: np.ndarray
    prob: np.ndarray
    psf_sigma_nm: np.ndarray

    # --- construction -------------------------------------------------------------------
    @classmethod
    def from_columns(cls, **cols: Any) -> LocTable:
        """Build from keyword columns; :data:`OPTIONAL_COLUMNS` may be omitted (NaN)."""
        unknown = set(cols) - set(COLUMNS)
        if unknown:
            raise ValueError(f"unknown localization columns {sorted(unknown)}; allowed {COLUMNS}")
        missing = [c for c in COLUMNS if c not in cols and c not in OPTIONAL_COLUMNS]
        if missing:
            raise ValueError(f"localization table is missing columns {missing}")
        n = int(np.asarray(cols["frame"]).reshape(-1).shape[0])
        out: dict[str, np.ndarray] = {}
        for c in COLUMNS:
            if c in OPTIONAL_COLUMNS and c not in cols:
                out[c] = np.full(n, np.nan)
                continue
            dtype = np.int64 if c == "frame" else np.float64
            arr = np.asarray(cols[c], dtype=dtype).reshape(-1)
            if arr.shape[0] != n:
                raise ValueError(f"column {c!r} has {arr.shape[0]} rows, 'frame' has {n}")
            out[c] = arr
        return cls(**out)

    @classmethod
    def empty(cls) -> LocTable:
        return cls.from_columns(**{c: np.zeros(0) for c in COLUMNS})

    @classmethod
    def concat(cls, tables: Iterable[LocTable]) -> LocTable:
        tabs = list(tables)
        if not tabs:
            return cls.empty()
        cols = {c: np.concatenate([getattr(t, c) for t in tabs]) for c in COLUMNS}
        return cls.from_columns(**cols)

    @classmethod
    def from_rows(cls, rows: Iterable[Mapping[str, Any]]) -> LocTable:
        rows = list(rows)
        if not rows:
            return cls.empty()
        present = [c for c in COLUMNS if c in rows[0] or c == "frame"]
        return cls.from_columns(**{c: [r.get(c, np.nan) for r in rows] for c in present})

    # --- access -------------------------------------------------------------------------
    def __len__(self) -> int:
        return int(self.frame.shape[0])

    def column(self, name: str) -> np.ndarray:
        if name not in COLUMNS:
            raise KeyError(f"no column {name!r}; columns are {COLUMNS}")
        return getattr(self, name)

    def select(self, mask: np.ndarray) -> LocTable:
        m = np.asarray(mask)
        return LocTable(**{f.name: getattr(self, f.name)[m] for f in fields(self)})

    def xy_nm(self) -> np.ndarray:
        return np.stack([self.x_nm, self.y_nm], axis=1)

    @property
    def has_z(self) -> bool:
        """True when any localization has a finite ``z_nm`` (3-D data)."""
        return bool(np.isfinite(self.z_nm).any())

    def xyz_nm(self) -> np.ndarray:
        """(n, 3) coordinates (x, y, z); z is NaN for 2-D localizations."""
        return np.stack([self.x_nm, self.y_nm, self.z_nm], axis=1)

    def with_frame(self, frame_index: int) -> LocTable:
        return LocTable(
            **{f.name: getattr(self, f.name) for f in fields(self) if f.name != "frame"},
            frame=np.full(len(self), frame_index, np.int64),
        )

    def shifted(self, dx_nm: np.ndarray | float, dy_nm: np.ndarray | float) -> LocTable:
        """Coordinates minus a (per-row or constant) shift, e.g. drift correction."""
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["x_nm"] = self.x_nm - dx_nm
        d["y_nm"] = self.y_nm - dy_nm
        return LocTable(**d)

    def to_rows(self) -> list[dict[str, float | int]]:
        """One dict per localization (``StageOutput.rows``)."""
        cols = [self.column(c).tolist() for c in COLUMNS]
        return [dict(zip(COLUMNS, vals, strict=True)) for vals in zip(*cols, strict=True)]

    # --- files --------------------------------------------------------------------------
    def write_csv(self, path: str | Path) -> Path:
        """All columns, exactly (``%.17g``), header = column names."""
        p = Path(path)
        with p.open("w", newline="") as fh:
            wr = csv.writer(fh)
            wr.writerow(COLUMNS)
            for row in zip(*(self.column(c) for c in COLUMNS), strict=True):
                wr.writerow([int(row[0])] + [f"{float(v):.17g}" for v in row[1:]])
        return p

    @classmethod
    def read_csv(cls, path: str | Path) -> LocTable:
        return cls._read(Path(path), thunderstorm=False)

    def write_thunderstorm_csv(self, path: str | Path) -> Path:
        """ThunderSTORM CSV (module doc): 1-based ``id`` and ``frame``; ``sigma`` = PSF width;
        ``offset`` = background per pixel; ``bkgstd`` = its shot-noise s.d.;
        ``uncertainty_xy`` = rms of the x/y localization uncertainties; 3-D tables take
        ThunderSTORM's 3-D columns."""
        p = Path(path)
        unc = np.sqrt(0.5 * (self.sigma_x_nm**2 + self.sigma_y_nm**2))
        three_d = self.has_z
        header = THUNDERSTORM_Z_HEADER if three_d else THUNDERSTORM_HEADER
        with p.open("w", newline="") as fh:
            wr = csv.writer(fh, quoting=csv.QUOTE_MINIMAL)
            fh.write(",".join(f'"{h}"' for h in header) + "\n")
            for i in range(len(self)):
                values = {
                    "x [nm]": self.x_nm[i],
                    "y [nm]": self.y_nm[i],
                    "z [nm]": self.z_nm[i],
                    "sigma [nm]": self.psf_sigma_nm[i],
                    "sigma1 [nm]": self.psf_sigma_nm[i],
                    "sigma2 [nm]": self.psf_sigma_nm[i],
                    "intensity [photon]": self.photons[i],
                    "offset [photon]": self.bg[i],
                    "bkgstd [photon]": np.sqrt(max(self.bg[i], 0.0)),
                    "uncertainty_xy [nm]": unc[i],
                    "uncertainty_z [nm]": self.sigma_z_nm[i],
                }
                row: list[int | str] = [i + 1, int(self.frame[i]) + 1]
                row += [f"{values[h]:.6f}" for h in header[2:]]
                wr.writerow(row)
        return p

    @classmethod
    def read_thunderstorm_csv(cls, path: str | Path) -> LocTable:
        """Read a ThunderSTORM CSV (only x, y and frame are required); ``uncertainty_xy``
        (``uncertainty`` in older ThunderSTORM versions) is assigned to both ``sigma_x_nm``
        and ``sigma_y_nm``, ``prob`` is 1; with ``sigma1``/``sigma2`` the PSF width is their
        mean."""
        return cls._read(Path(path), thunderstorm=True)

    @classmethod
    def _read(cls, path: Path, thunderstorm: bool) -> LocTable:
        if not path.is_file():
            raise FileNotFoundError(f"localization file {path} does not exist")
        with path.open(newline="") as fh:
            rd = csv.reader(fh)
            try:
                header = [h.strip().strip('"') for h in next(rd)]
            except StopIteration:
                raise InvalidValue(f"{path}: empty file, expected a header row") from None
            data = [r for r in rd if r]
        idx = {h: i for i, h in enumerate(header)}
        need = (
            ("frame", "x [nm]", "y [nm]")
            if thunderstorm
            else tuple(c for c in COLUMNS if c not in OPTIONAL_COLUMNS)
        )
        missing = [c for c in need if c not in idx]
        if missing:
            raise InvalidValue(f"{path}: missing columns {missing}; header is {header}")

        def col(name: str, default: float = np.nan) -> np.ndarray:
            if name not in idx:
                return np.full(len(data), default)
            try:
                return np.array([float(r[idx[name]]) for r in data], dtype=np.float64)
            except (ValueError, IndexError) as exc:
                raise InvalidValue(f"{path}: bad value in column {name!r}: {exc}") from None

        if not thunderstorm:
            return cls.from_columns(**{c: col(c) for c in COLUMNS})  # optional ones: NaN
        unc = col("uncertainty_xy [nm]") if "uncertainty_xy [nm]" in idx else col("uncertainty [nm]")
        sigma = col("sigma [nm]") if "sigma [nm]" in idx else 0.5 * (col("sigma1 [nm]") + col("sigma2 [nm]"))
        return cls.from_columns(
            frame=col("frame").astype(np.int64) - 1,
            x_nm=col("x [nm]"),
            y_nm=col("y [nm]"),
            photons=col("intensity [photon]"),
            bg=col("offset [photon]"),
            sigma_x_nm=unc,
            sigma_y_nm=unc,
            prob=np.ones(len(data)),
            psf_sigma_nm=sigma,
            z_nm=col("z [nm]"),
            sigma_z_nm=col("uncertainty_z [nm]"),
        )
