"""The sample under the XY stage: an unbounded plane of fields, each one camera field wide.

The plane is cut into square fields of ``field_px`` camera pixels (the full sensor at the
current objective). Field ``(ix, iy)`` covers world pixels ``[ix·n, (ix+1)·n) × [iy·n,
(iy+1)·n)`` and holds its own sample (cells, events, emitters), built from the seed and its
index alone: field ``(0, 0)`` is built from the seed itself, so the home position shows
exactly the field a fixed-stage microscope shows. The stage position is the world
coordinate of the sensor's top-left corner, resolved to one camera pixel; a field of view
between fields is cut from up to four of them (:func:`cover`).

Invariants: the same (seed, index) always builds the same field; a field of view is
covered exactly once by the pieces :func:`cover` returns; image axes are stage axes
(+x right, +y down), one camera pixel = ``pixel_size_um`` of stage travel.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

import numpy as np

__all__ = ["STAGE_LIMIT_UM", "FieldCache", "FieldIndex", "Piece", "cover", "field_seed", "stage_offset_px"]

FieldIndex = tuple[int, int]  # (ix, iy)
STAGE_LIMIT_UM = 50_000.0  # travel of a typical motorised stage: ±50 mm

T = TypeVar("T")


def field_seed(seed: int, ix: int, iy: int) -> int:
    """Seed of field ``(ix, iy)``: the run's seed at the home field, a hash elsewhere."""
    if ix == 0 and iy == 0:
        return int(seed)
    ss = np.random.SeedSequence([int(seed) & 0xFFFFFFFF, ix & 0xFFFFFFFF, iy & 0xFFFFFFFF, 0x5747])
    return int(ss.generate_state(1)[0] % (2**31 - 1))


def stage_offset_px(x_um: float, y_um: float, pixel_size_um: float) -> tuple[int, int]:
    """World pixel (ox, oy) of the sensor's top-left corner at stage position (x, y)."""
    return round(x_um / pixel_size_um), round(y_um / pixel_size_um)


@dataclass(frozen=True)
class Piece:
    """The part of a field of view cut from one field.

    ``field_rows/cols`` index the field's own image, ``fov_rows/cols`` the field of view;
    ``dy_px, dx_px`` = position of the field's pixel (0, 0) in field-of-view pixels.
    """

    field: FieldIndex
    field_rows: slice
    field_cols: slice
    fov_rows: slice
    fov_cols: slice
    dy_px: int
    dx_px: int

    @property
    def whole(self) -> bool:
        return self.dy_px == 0 and self.dx_px == 0

    @property
    def area_px(self) -> int:
        return (self.fov_rows.stop - self.fov_rows.start) * (self.fov_cols.stop - self.fov_cols.start)


def _spans(o: int, n: int) -> list[tuple[int, int, int]]:
    """Fields along one axis under [o, o + n): (field index, start in field, start in fov)."""
    out = []
    i = math.floor(o / n)
    pos = o
    while pos < o + n:
        start_in_field = pos - i * n
        out.append((i, start_in_field, pos - o))
        pos = (i + 1) * n
        i += 1
    return out


def cover(ox_px: int, oy_px: int, field_px: int) -> list[Piece]:
    """Pieces of the fields under a field of view whose top-left corner is world pixel (ox, oy).

    One piece when the view sits exactly on a field (the home position), else two or four.
    Sorted by area, largest first.
    """
    n = field_px
    pieces = []
    for iy, fy, vy in _spans(oy_px, n):
        hy = min(n - fy, n - vy)
        for ix, fx, vx in _spans(ox_px, n):
            hx = min(n - fx, n - vx)
            pieces.append(
                Piece(
                    field=(ix, iy),
                    field_rows=slice(fy, fy + hy),
                    field_cols=slice(fx, fx + hx),
                    fov_rows=slice(vy, vy + hy),
                    fov_cols=slice(vx, vx + hx),
                    dy_px=iy * n - oy_px,
                    dx_px=ix * n - ox_px,
                )
            )
    return sorted(pieces, key=lambda p: -p.area_px)


class FieldCache(Generic[T]):
    """Fields built on demand, least-recently-used dropped beyond ``max_fields``.

    A dropped field is rebuilt identically from its seed when the stage returns; state
    that must survive (dose delivered, photophysics) is kept by the caller, not here.
    """

    def __init__(self, build: Callable[[FieldIndex], T], max_fields: int) -> None:
        self._build = build
        self.max_fields = max(1, int(max_fields))
        self._fields: OrderedDict[FieldIndex, T] = OrderedDict()

    def get(self, index: FieldIndex) -> T:
        hit = self._fields.get(index)
        if hit is None:
            hit = self._fields[index] = self._build(index)
            while len(self._fields) > self.max_fields:
                self._fields.popitem(last=False)
        else:
            self._fields.move_to_end(index)
        return hit

    def peek(self, index: FieldIndex) -> T | None:
        return self._fields.get(index)

    def __len__(self) -> int:
        return len(self._fields)
