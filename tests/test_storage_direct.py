"""Direct I/O (``storage.io``): files written past the page cache stay valid OME-TIFF.

Checked with code we did not write: tifffile, ome-types and bioio (bioio-ome-tiff) read
a direct-written run exactly as a buffered one; ``fincore`` (util-linux) shows that the
direct file's pages were never cached; a real ramfs refuses ``O_DIRECT`` and a real tmpfs
is memory, so ``auto`` falls back there with one log line.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import ome_types
import pytest
import tifffile
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from smartscope.config import validate_config
from smartscope.frame import Frame
from smartscope.state import DriverState
from smartscope.storage import RunFolder, count_pages, read_jsonl, recover, resolve_io
from smartscope.storage.direct import ALIGN, AlignedWriter, aligned_empty, direct_io_refusal, open_file
from smartscope.storage.tiff import StackWriter
from tests.conftest import cfg_dict


def _needs_direct(folder: Path) -> None:
    why = direct_io_refusal(folder)
    if why is not None:
        pytest.skip(f"{folder} refuses direct I/O here ({why})")


def _frames(shape: tuple[int, int], n: int, seed: int = 0) -> list[Frame]:
    """Two positions, two channels; sizes that are not multiples of 4 KiB on purpose."""
    rng = np.random.default_rng(seed)
    frames = []
    for i in range(n):
        img = rng.integers(0, 65535, shape, dtype=np.uint16)
        p, c = (i // 2) % 2, i % 2
        state = DriverState(exposure_ms=5.0, xy_um=(10.0 * p, 0.0), pixel_size_um=0.1)
        f = Frame(i, img, camera_time_s=100.0 + 0.01 * i, channel=("DAPI", "FITC")[c], state=state)
        f.axes = {"t": i // 4, "p": p, "c": c}
        f.series = f"p{p}"
        frames.append(f)
    return frames


def _write_run(root: Path, io: str, frames: list[Frame]) -> Path:
    run = RunFolder(root, f"run-{io}", io=io)
    assert run.io == io
    for k in range(0, len(frames), 5):  # several batches, so pages are linked batch to batch
        run.write_raw(frames[k : k + 5])
    run.close()
    return run.path


@pytest.mark.parametrize("shape", [(37, 53), (512, 500)])
def test_a_direct_written_run_reads_like_a_buffered_one(tmp_path: Path, shape: tuple[int, int]) -> None:
    from bioio import BioImage
    from bioio_ome_tiff import Reader

    _needs_direct(tmp_path)
    frames = _frames(shape, 16)
    paths = {io: _write_run(tmp_path, io, frames) / "raw.ome.tif" for io in ("direct", "buffered")}
    with tifffile.TiffFile(paths["direct"]) as tif:
        assert tif.is_ome and len(tif.pages) == 16
        # each page's pixels sit where the kernel could take them from the frame's memory
        offsets = [p.dataoffsets[0] for p in tif.pages]  # type: ignore[union-attr]
        assert [o % ALIGN for o in offsets] == [f.image.ctypes.data % ALIGN for f in frames]
        direct = [s.asarray() for s in tif.series]
        xml = tif.ome_metadata or ""
    with tifffile.TiffFile(paths["buffered"]) as tif:
        buffered = [s.asarray() for s in tif.series]
    assert len(direct) == len(buffered) == 2
    for a, b in zip(direct, buffered, strict=True):
        assert np.array_equal(a, b)
    # every frame where its indices say: series p, time t, channel c
    for f in frames:
        p = int(f.series[1])
        assert np.array_equal(direct[p][f.axes["t"], f.axes["c"]], f.image)
    ome = ome_types.from_xml(xml)  # validates against the OME schema
    assert [im.name for im in ome.images] == ["raw p0", "raw p1"]
    img = BioImage(paths["direct"], reader=Reader)
    assert len(img.scenes) == 2
    img.set_scene(1)
    data = img.get_image_data("TCZYX")
    assert data.shape == (4, 2, 1, *shape)
    assert np.array_equal(data[:, :, 0], direct[1])


@pytest.mark.skipif(shutil.which("fincore") is None, reason="needs util-linux fincore")
def test_direct_pages_never_enter_the_page_cache(tmp_path: Path) -> None:
    _needs_direct(tmp_path)
    frames = [np.full((1024, 1024), i, np.uint16) for i in range(16)]  # 32 MiB
    cached = {}
    for io in ("direct", "buffered"):
        w = StackWriter(tmp_path / f"{io}.ome.tif", io=io)  # type: ignore[arg-type]
        w.write_batch(frames, [b'{"frame": 0}'] * 16, [None] * 16)
        w.close()
        out = subprocess.run(
            ["fincore", "--bytes", "--noheadings", "--output", "RES", str(w.path)],
            capture_output=True,
            text=True,
            check=True,
        )
        cached[io] = int(out.stdout.split()[0])
    size = 32 << 20
    assert cached["direct"] < size // 16, cached  # a few metadata blocks at most
    assert cached["buffered"] > size // 2, cached


def test_frames_are_written_from_their_own_memory(tmp_path: Path) -> None:
    """No copy of the pixels: a page-aligned frame lands at an aligned offset; an ordinary
    numpy frame at the offset that matches its address, and only its partial first and
    last 4 KiB blocks (and the metadata) go through the staging ring."""
    _needs_direct(tmp_path)
    shape = (256, 512)  # 256 KiB
    aligned = []
    for i in range(4):
        img = aligned_empty(256 * 512 * 2).view(np.uint16).reshape(shape)
        img[:] = i + 1
        aligned.append(img)
    ordinary = [np.full(shape, 9 + i, np.uint16) for i in range(3)]
    assert any(f.ctypes.data % ALIGN for f in ordinary)
    w = StackWriter(tmp_path / "zero-copy.ome.tif", io="direct")
    w.write_batch(aligned, [b'{"frame": 0}'] * 4, [None] * 4)
    w.write_batch(ordinary, [b'{"frame": 4}'] * 3, [None] * 3)
    copied = w.stats.copied_bytes
    w.close()
    assert copied < 7 * 2 * ALIGN + 4 * ALIGN  # at most two blocks per frame, the metadata and links
    n, got_shape, _ = count_pages(w.path)
    assert (n, got_shape) == (7, shape)
    with tifffile.TiffFile(w.path) as tif:
        pages = list(tif.pages)
        assert [int(p.asarray()[0, 0]) for p in pages] == [1, 2, 3, 4, 9, 10, 11]  # type: ignore[union-attr]
        offsets = [p.dataoffsets[0] for p in pages]  # type: ignore[union-attr]
    assert all(o % ALIGN == 0 for o in offsets[:4])
    assert [o % ALIGN for o in offsets[4:]] == [f.ctypes.data % ALIGN for f in ordinary]


@contextlib.contextmanager
def _mounted(kind: str, path: Path, *options: str) -> Iterator[bool]:
    path.mkdir(parents=True, exist_ok=True)
    ok = subprocess.run(["mount", "-t", kind, *options, kind, str(path)], capture_output=True)
    try:
        yield ok.returncode == 0
    finally:
        if ok.returncode == 0:
            subprocess.run(["umount", "-l", str(path)], capture_output=True)


def test_auto_falls_back_with_one_line_where_direct_io_is_refused(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with _mounted("ramfs", tmp_path / "ram") as mounted:
        if not mounted:
            pytest.skip("cannot mount a ramfs here")
        folder = tmp_path / "ram"
        assert direct_io_refusal(folder) is not None  # ramfs has no O_DIRECT
        with caplog.at_level(logging.INFO, logger="smartscope.storage.direct"):
            assert resolve_io(folder, "auto") == "buffered"
        lines = [r.getMessage() for r in caplog.records]
        assert len(lines) == 1 and "refuses direct I/O" in lines[0] and str(folder) in lines[0]
        with pytest.raises(OSError, match=r"storage.io is 'direct' but the file system refuses") as err:
            resolve_io(folder, "direct")
        assert err.value.filename == str(folder)
        run = RunFolder(folder, "fallback")  # a whole run folder there works, buffered
        assert run.io == "buffered"
        run.write_raw(_frames((16, 16), 3))
        run.close()
        assert count_pages(run.path / "raw.ome.tif")[0] == 3


def test_auto_writes_tmpfs_through_the_cache_and_says_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with _mounted("tmpfs", tmp_path / "shm", "-o", "size=8m") as mounted:
        if not mounted:
            pytest.skip("cannot mount a tmpfs here")
        with caplog.at_level(logging.INFO, logger="smartscope.storage.direct"):
            assert resolve_io(tmp_path / "shm", "auto") == "buffered"
        assert len(caplog.records) == 1 and "tmpfs" in caplog.records[0].getMessage()


def test_storage_io_is_validated_and_a_refused_direct_run_is_one_line(tmp_path: Path) -> None:
    from smartscope.config import ConfigError

    with pytest.raises((ConfigError, ValueError), match=r"storage\.io"):
        validate_config(cfg_dict(tmp_path, storage={"root": str(tmp_path), "io": "mmap"}))
    with _mounted("ramfs", tmp_path / "ram") as mounted:
        if not mounted:
            pytest.skip("cannot mount a ramfs here")
        cfg = cfg_dict(tmp_path, acquisition={"n_frames": 5})
        cfg["storage"] = {"root": str(tmp_path / "ram" / "runs"), "io": "direct"}
        path = tmp_path / "run.yaml"
        path.write_text(yaml.safe_dump(cfg))
        proc = subprocess.run(
            [sys.executable, "-m", "smartscope.cli", "run", str(path)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode != 0
        err = proc.stderr.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: ") and "refuses direct I/O" in err[0], proc.stderr
        assert "Traceback" not in proc.stderr


def test_a_direct_run_end_to_end_records_its_mode_and_recovers(demo_core: object, tmp_path: Path) -> None:
    from smartscope.drivers.mmcore import PymmcorePlusDriver
    from smartscope.runner import run

    _needs_direct(tmp_path)
    cfg = validate_config(
        cfg_dict(
            tmp_path,
            acquisition={"exposure_ms": 1.0, "n_frames": 60},
            storage={"root": str(tmp_path / "runs"), "io": "direct"},
        )
    )
    res = run(
        cfg,
        driver=PymmcorePlusDriver(cfg.microscope, cfg.acquisition, cfg.safe_state, core=demo_core),
        report=False,
    )
    assert res.status == "completed" and res.metrics["storage_io"] == "direct"
    run_dir = Path(res.run_dir)
    assert len(read_jsonl(run_dir / "frames.jsonl")) == 60
    assert recover(run_dir) == {"raw.ome.tif": 60}  # recover rewrites the header of a finished run too
    with tifffile.TiffFile(run_dir / "raw.ome.tif") as tif:
        assert tif.is_ome and tif.series[0].shape == (60, 512, 512)


@pytest.mark.skipif(sys.platform not in ("win32", "darwin"), reason="Windows and macOS direct I/O paths")
def test_direct_io_on_windows_and_macos(tmp_path: Path) -> None:  # pragma: no cover - not this platform
    f = open_file(tmp_path / "x.bin", direct=True)
    buf = aligned_empty(2 * ALIGN)
    buf[:] = 7
    assert f.writev([buf.data], 0) == 2 * ALIGN
    f.sync()
    f.close()
    assert (tmp_path / "x.bin").read_bytes() == b"\x07" * (2 * ALIGN)
    frames = _frames((37, 53), 8)
    path = _write_run(tmp_path, "direct", frames) / "raw.ome.tif"
    with tifffile.TiffFile(path) as tif:
        assert tif.is_ome and len(tif.pages) == 8


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.tuples(st.integers(1, 20_000), st.integers(0, 4095)), min_size=1, max_size=8),
    st.integers(0, 3),
)
def test_any_layout_of_buffers_reaches_the_file_exactly(
    tmp_path_factory: pytest.TempPathFactory, pieces: list[tuple[int, int]], start_blocks: int
) -> None:
    """Whatever the sizes and memory addresses, direct and buffered files hold the same
    bytes at the offsets ``place`` chose, zeros in the gaps (a reference built in memory)."""
    folder = tmp_path_factory.mktemp("layout")
    _needs_direct(folder)
    rng = np.random.default_rng(len(pieces))
    backing = rng.integers(0, 256, sum(n + shift + 1 for n, shift in pieces) + ALIGN, dtype=np.uint8)
    views, at = [], 0
    for n, shift in pieces:  # buffers at arbitrary addresses inside one allocation
        views.append(backing[at + shift : at + shift + n])
        at += n + shift + 1
    start = start_blocks * ALIGN
    for io in ("direct", "buffered"):
        out = AlignedWriter(open_file(folder / f"{io}.bin", direct=io == "direct"))
        placed, pos = [], start
        for v in views:
            off = out.place(pos, v)
            placed.append((off, v))
            pos = off + v.nbytes
        end = out.padded(pos)
        out.write(placed, start, end)
        out.close()
        data = (folder / f"{io}.bin").read_bytes()
        expected = bytearray(end)
        for off, v in placed:
            expected[off : off + v.nbytes] = v.tobytes()
        assert data[start:end] == bytes(expected[start:end]), io
        if io == "direct":
            assert all((off - v.ctypes.data) % ALIGN == 0 for off, v in placed)
            assert start % ALIGN == 0 and end % ALIGN == 0
