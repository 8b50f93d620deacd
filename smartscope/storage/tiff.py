"""Crash-safe BigTIFF stacks: pages appended in batches, linked in only once complete.

A batch of pages is written as every page's pixel data followed by one block of their
descriptions, software strings and IFDs (chained, the last one's next offset 0), in large
sequential writes (:class:`~smartscope.storage.direct.AlignedWriter`). Only then is the
previous page's next-IFD pointer patched to the batch's first IFD. So the file is a valid
TIFF after every batch, and a ``kill -9`` at any moment leaves every linked page readable;
a batch cut short is simply not linked.

With direct I/O (``io="direct"``: no page cache) batches start and end on 4 KiB
boundaries, each page's pixels are placed so that the kernel takes them straight from the
frame's memory (:class:`~smartscope.storage.direct.AlignedWriter`), and the link rewrites
the one 4 KiB block that holds the pointer (kept in memory). Buffered, nothing is padded
and the link is one 8-byte write. Either way tifffile, ome-types and bioio read the same
OME-TIFF.

Each IFD carries the resolution tags (pixels per cm from the page's pixel size in µm; no
unit when it is unknown), so readers that ignore the OME header (ImageJ's TIFF reader,
tifffile's ``get_resolution``) still see the scale.

The OME-XML header goes into the first page's description the same way: the new text is
appended and synced, and only then does one 16-byte write point the description tag at it.
A failed write (a full disk) leaves the old, valid header in place.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from smartscope.exceptions import UserError
from smartscope.storage.direct import ALIGN, AlignedWriter, IoMode, WriteStats, open_file

__all__ = [
    "StackWriter",
    "TiffFormatError",
    "count_pages",
    "write_description",
]

_HEADER = b"II" + struct.pack("<HHHQ", 43, 8, 0, 0)
_SOFTWARE = b"smartscope\0"
_SAMPLE_FORMAT: dict[str, int] = {"u": 1, "i": 2, "f": 3}
_N_TAGS = 15
_IFD_BYTES = 8 + 20 * _N_TAGS + 8


class TiffFormatError(UserError, ValueError):
    """The file is not a BigTIFF this writer can extend or describe."""


def _resolution(pixel_size_um: float | None) -> tuple[int, int]:
    """(RATIONAL as one LONG8 value, ResolutionUnit): pixels per cm, or 1/1 with no unit."""
    if not pixel_size_um or pixel_size_um <= 0:
        return 1 | (1 << 32), 1
    per_cm = Fraction(1e4 / pixel_size_um).limit_denominator(1000)
    while per_cm.numerator >= 1 << 32:  # more than 4e9 px/cm: keep it representable
        per_cm = Fraction(round(per_cm))
    return per_cm.numerator | (per_cm.denominator << 32), 3


class _BigTiffAppender:
    """Appends 2-D pages to a BigTIFF in batches (see the module doc).

    A batch is laid out as every page's pixel data, then one block with every page's
    description, software string and IFD. With direct I/O a batch starts and ends on a
    4 KiB boundary and each page's pixels start where :meth:`AlignedWriter.place` puts
    them (at the offset within a 4 KiB block that the frame has within its memory page:
    aligned for page-aligned frames; the kernel writes the frame from where it is);
    buffered, nothing is padded. The block holding the last IFD's next-page pointer is
    kept in memory, so linking the next batch rewrites that one block (direct I/O cannot
    write 8 bytes).
    """

    def __init__(self, path: Path, io: IoMode = "buffered", stats: WriteStats | None = None) -> None:
        self.path = path
        self._out = AlignedWriter(open_file(path, direct=io == "direct"), stats)
        self.io: IoMode = io
        header = bytes(_HEADER) + bytes(self._out.padded(len(_HEADER)) - len(_HEADER))
        self._out.write([(0, header)], 0, len(header))
        self._end = len(header)
        self._link_pos = 8  # where the pointer to the next IFD is stored
        self._link_block = (0, bytes(header[:ALIGN]))  # direct I/O: the aligned block holding it

    @property
    def stats(self) -> WriteStats:
        return self._out.stats

    def append(self, pages: Sequence[tuple[np.ndarray, bytes, float | None]]) -> None:
        """Write ``(image, description, pixel size in µm)`` pages; they are part of the file
        when this returns."""
        if not pages:
            return
        images = []
        offset = self._end
        data_offsets = []
        for image, _, _ in pages:
            img = image if image.flags.c_contiguous else np.ascontiguousarray(image)
            if img.ndim != 2:
                raise ValueError(f"{self.path.name}: pages are 2-D, got shape {img.shape}")
            if img.dtype.kind not in _SAMPLE_FORMAT or img.dtype.byteorder == ">":
                raise ValueError(f"{self.path.name}: unsupported pixel type {img.dtype}")
            images.append(img)
            data_offsets.append(self._out.place(offset, img))
            offset = data_offsets[-1] + img.nbytes
        meta_start = offset
        meta = bytearray()
        ifd_offsets = []
        entries = []
        for img, (_, description, px_um) in zip(images, pages, strict=True):
            # NUL-terminated, and longer than 8 bytes so it is never stored inside the IFD entry
            desc = description + b"\0" * max(1, 9 - len(description))
            desc_off = meta_start + len(meta)
            meta += desc
            soft_off = meta_start + len(meta)
            meta += _SOFTWARE
            meta += bytes(-len(meta) % 8)  # IFDs start on an 8-byte boundary (TIFF: a word)
            ifd_offsets.append(meta_start + len(meta))
            entries.append((img, len(desc), desc_off, soft_off, len(meta), px_um))
            meta += bytes(_IFD_BYTES)
        for k, (img, desc_len, desc_off, soft_off, at, px_um) in enumerate(entries):
            h, w = img.shape
            per_cm, unit = _resolution(px_um)
            next_ifd = ifd_offsets[k + 1] if k + 1 < len(entries) else 0
            tags = (  # (tag, type, count, value); types: 3 SHORT, 4 LONG, 2 ASCII, 5 RATIONAL, 16 LONG8
                (256, 4, 1, w),
                (257, 4, 1, h),
                (258, 3, 1, img.dtype.itemsize * 8),
                (259, 3, 1, 1),  # no compression
                (262, 3, 1, 1),  # min-is-black
                (270, 2, desc_len, desc_off),
                (273, 16, 1, data_offsets[k]),
                (277, 3, 1, 1),
                (278, 4, 1, h),
                (279, 16, 1, img.nbytes),
                (282, 5, 1, per_cm),  # XResolution, inline (8 bytes)
                (283, 5, 1, per_cm),  # YResolution
                (296, 3, 1, unit),  # ResolutionUnit: 3 cm, 1 none
                (305, 2, len(_SOFTWARE), soft_off),
                (339, 3, 1, _SAMPLE_FORMAT[img.dtype.kind]),
            )
            ifd = bytearray(struct.pack("<Q", _N_TAGS))
            for tag, typ, count, value in tags:
                ifd += struct.pack("<HHQQ", tag, typ, count, value)
            ifd += struct.pack("<Q", next_ifd)
            meta[at : at + _IFD_BYTES] = ifd
        end = self._out.padded(meta_start + len(meta))
        self._out.write([*zip(data_offsets, images, strict=True), (meta_start, meta)], self._end, end)
        # link the batch in: one pointer; direct I/O rewrites the whole block that holds it
        pointer = struct.pack("<Q", ifd_offsets[0])
        if self.io == "direct":
            block_off, block = self._link_block
            at = self._link_pos - block_off
            self._out.write_block(block[:at] + pointer + block[at + 8 :], block_off)
        else:
            self._out.write_block(pointer, self._link_pos)
        self._link_pos = ifd_offsets[-1] + 8 + 20 * _N_TAGS
        if self.io == "direct":  # keep the aligned block that holds the new pointer
            block_off = self._link_pos // ALIGN * ALIGN
            link_block = bytearray(ALIGN)
            pieces: list[tuple[int, Any]] = [*zip(data_offsets, images, strict=True), (meta_start, meta)]
            for off, buf in pieces:
                view = memoryview(buf).cast("B")
                a, z = max(block_off, off), min(block_off + ALIGN, off + view.nbytes)
                if a < z:
                    link_block[a - block_off : z - block_off] = view[a - off : z - off]
            self._link_block = (block_off, bytes(link_block))
        self._end = end

    def sync(self) -> None:
        self._out.sync()

    def close(self) -> None:
        self._out.close()


class StackWriter:
    """A growing stack of same-shape 2-D frames in one crash-safe BigTIFF file; ``planes``
    keeps what the caller said of each page (for the header written at ``close``)."""

    def __init__(
        self, path: Path, fsync_every: int = 0, io: IoMode = "buffered", stats: WriteStats | None = None
    ) -> None:
        self.path = path
        self.fsync_every = fsync_every
        self.planes: list[Any] = []
        self.shape: tuple[int, ...] | None = None
        self.dtype: np.dtype[Any] | None = None
        self._tif = _BigTiffAppender(path, io, stats)
        self._since_sync = 0

    @property
    def io(self) -> IoMode:
        return self._tif.io

    @property
    def stats(self) -> WriteStats:
        """Bytes written, write calls, time in them and the slowest (for benches and checks)."""
        return self._tif.stats

    @property
    def n_pages(self) -> int:
        return len(self.planes)

    def accepts(self, image: np.ndarray) -> bool:
        return self.shape is None or (image.shape == self.shape and image.dtype == self.dtype)

    def write_batch(
        self,
        images: Sequence[np.ndarray],
        descriptions: Sequence[bytes],
        planes: Sequence[Any],
        pixel_sizes_um: Sequence[float | None] | None = None,
    ) -> int:
        """Append pages (with their pixel size in µm where known, for the resolution tags);
        return the page number of the first. They are in the OS on return."""
        for image in images:
            if self.shape is None:
                self.shape, self.dtype = image.shape, image.dtype
            elif not self.accepts(image):
                raise ValueError(
                    f"{self.path.name}: frame {image.shape}/{image.dtype} does not match the stack's "
                    f"{self.shape}/{self.dtype}"
                )
        first = len(self.planes)
        sizes = pixel_sizes_um if pixel_sizes_um is not None else [None] * len(images)
        self._tif.append(list(zip(images, descriptions, sizes, strict=True)))
        self.planes.extend(planes)
        self._since_sync += len(images)
        if self.fsync_every and self._since_sync >= self.fsync_every:
            self._tif.sync()
            self._since_sync = 0
        return first

    def close(self, description: str | None = None) -> None:
        """Close the file; with ``description`` (the OME-XML), make it the first page's
        (through the page cache: one small write at the end, after the pages)."""
        try:
            if description is not None and self.planes:
                self._tif.sync()
        finally:
            self._tif.close()
        if description is not None and self.planes:
            write_description(self.path, description)


def _first_ifd(fh: Any, path: Path) -> int:
    head = fh.read(16)
    if len(head) < 16 or head[:4] != b"II+\0":
        raise TiffFormatError(f"{path}: not a little-endian BigTIFF (a run's raw or output stack)")
    return int(struct.unpack("<Q", head[8:16])[0])


def write_description(path: Path, text: str) -> None:
    """Make ``text`` the first page's description without risking the file (module doc)."""
    data = text.encode("utf-8") + b"\0"
    with open(path, "r+b") as fh:
        ifd = _first_ifd(fh, path)
        if ifd == 0:
            raise TiffFormatError(f"{path}: holds no page to describe")
        fh.seek(ifd)
        (n,) = struct.unpack("<Q", fh.read(8))
        entries = fh.read(20 * n)
        for i in range(n):
            tag = struct.unpack_from("<H", entries, 20 * i)[0]
            if tag == 270:
                entry = ifd + 8 + 20 * i
                break
        else:
            raise TiffFormatError(f"{path}: the first page has no description tag")
        end = fh.seek(0, os.SEEK_END)
        pad = end % 2
        fh.write(b"\0" * pad + data)
        fh.flush()
        os.fsync(fh.fileno())
        fh.seek(entry + 4)  # count and offset of the ASCII tag: one 16-byte write
        fh.write(struct.pack("<QQ", len(data), end + pad))
        fh.flush()
        os.fsync(fh.fileno())


def count_pages(path: Path) -> tuple[int, tuple[int, int] | None, np.dtype[Any] | None]:
    """Complete, linked pages of one of our BigTIFFs: (count, (height, width), dtype).

    Walks the IFD chain and stops at the first pointer that leads outside the file or to a
    page that does not fit in it, so a file cut short by a crash or a full disk still counts
    every page before the damage.
    """
    size = path.stat().st_size
    n = 0
    shape: tuple[int, int] | None = None
    dtype: np.dtype[Any] | None = None
    with open(path, "rb") as fh:
        ifd = _first_ifd(fh, path)
        seen: set[int] = set()
        while ifd and ifd not in seen and ifd + _IFD_BYTES <= size:
            seen.add(ifd)
            fh.seek(ifd)
            head = fh.read(8)
            (k,) = struct.unpack("<Q", head)
            raw = fh.read(20 * k + 8)
            if len(raw) < 20 * k + 8:
                break
            tags = {}
            for i in range(k):
                tag, _typ, _count, value = struct.unpack_from("<HHQQ", raw, 20 * i)
                tags[tag] = value
            if tags.get(273, size) + tags.get(279, size) > size:
                break
            if shape is None:
                shape = (int(tags.get(257, 0)), int(tags.get(256, 0)))
                kind = {1: "u", 2: "i", 3: "f"}.get(int(tags.get(339, 1)), "u")
                dtype = np.dtype(f"<{kind}{int(tags.get(258, 16)) // 8}")
            n += 1
            (ifd,) = struct.unpack_from("<Q", raw, 20 * k)
    return n, shape, dtype
