"""The writer queue's reserved memory (smartscope.storage.pool): frames are copied into slots
touched in advance, a slot is lent again only once every view of its frame is gone, and a
run with the reserve stores exactly what the camera gave."""

from __future__ import annotations

import gc
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tifffile

from smartscope.config import validate_config
from smartscope.runner import run
from smartscope.storage import read_jsonl
from smartscope.storage.pool import PAGE_BYTES, FramePool, release_reserve, reserve
from tests.conftest import cfg_dict


def _ready(pool: FramePool) -> FramePool:
    deadline = time.monotonic() + 30
    while pool.touched < pool.n_slots and time.monotonic() < deadline:
        time.sleep(0.01)
    assert pool.touched == pool.n_slots
    return pool


def test_a_held_frame_is_a_page_aligned_copy_in_a_slot() -> None:
    pool = _ready(FramePool(1000 * 2, 3))
    img = np.arange(1000, dtype=np.uint16).reshape(20, 50)
    held = pool.hold(img)
    assert held is not img and not np.shares_memory(held, img)
    np.testing.assert_array_equal(held, img)
    assert held.dtype == img.dtype and held.shape == img.shape
    assert held.ctypes.data % PAGE_BYTES == 0  # the direct-I/O writer takes it without a copy
    assert pool.slot_bytes % PAGE_BYTES == 0 and (pool.held, pool.passed) == (1, 0)
    pool.close()


def test_a_slot_comes_back_only_when_the_last_view_is_gone() -> None:
    pool = _ready(FramePool(64 * 64 * 2, 1))
    a = pool.hold(np.full((64, 64), 7, np.uint16))
    view = a[10:20, ::2]  # what analysis or a listener may keep
    mv = memoryview(np.asarray(view))
    del a, view
    gc.collect()
    other = np.full((64, 64), 9, np.uint16)
    assert pool.hold(other) is other  # the slot is still in use: the frame is kept as it came
    assert int(np.asarray(mv)[0, 0]) == 7  # and the kept view was not overwritten
    del mv
    gc.collect()
    again = pool.hold(other)
    assert again is not other and int(again[0, 0]) == 9  # the slot is lent again
    pool.close()


@pytest.mark.parametrize(
    ("case", "image"),
    [
        ("larger than a slot", np.zeros((128, 128), np.uint16)),
        ("empty", np.zeros((0, 64), np.uint16)),
    ],
)
def test_frames_a_slot_cannot_take_are_kept_as_they_came(case: str, image: np.ndarray) -> None:
    pool = _ready(FramePool(64 * 64 * 2, 2))
    assert pool.hold(image) is image, case
    assert pool.passed == 1
    pool.close()


def test_a_smaller_frame_after_a_roi_change_fits_a_slot() -> None:
    pool = _ready(FramePool(256 * 256 * 2, 2))
    roi = np.arange(100 * 60, dtype=np.uint16).reshape(100, 60)
    held = pool.hold(roi)
    assert held is not roi
    np.testing.assert_array_equal(held, roi)
    pool.close()


def test_bad_sizes_are_refused() -> None:
    with pytest.raises(ValueError, match="FramePool"):
        FramePool(0, 4)


@pytest.mark.parametrize("reserve", ["always", "never"])
def test_a_run_with_the_reserve_stores_what_the_camera_gave(tmp_path: Path, reserve: str) -> None:
    """The demo camera's frames through the reserve (or not) to disk, frame for frame."""
    seen: list[np.ndarray] = []
    loops: list[Any] = []
    cfg = validate_config(
        cfg_dict(
            tmp_path,
            microscope={"config_file": "demo"},
            acquisition={"exposure_ms": 5.0, "n_frames": 40},
            storage={
                "root": str(tmp_path / "runs"),
                "name": "pool",
                "reserve_queue": reserve,
                "queue_mb": 16,
            },
        )
    )

    def keep_copies(loop):  # type: ignore[no-untyped-def]
        from smartscope.loop import ListenerBase

        class Copy(ListenerBase):
            def on_frame(self, frame):  # type: ignore[no-untyped-def]
                seen.append(np.array(frame.image))

        loop.add_listener(Copy())
        loops.append(loop)

    res = run(cfg, report=False, on_loop=keep_copies)
    assert res.status == "completed", res.reason
    run_dir = Path(res.run_dir)
    assert len(read_jsonl(run_dir / "frames.jsonl")) == 40
    stack = tifffile.imread(run_dir / "raw.ome.tif")
    assert stack.shape[0] == 40 == len(seen)
    for i in range(40):
        np.testing.assert_array_equal(stack[i], seen[i])
    pool = loops[0]._reserve
    if reserve == "never":
        assert pool is None
    else:  # the 512² demo frames went through slots once they were touched
        assert pool is not None and pool.held > 0 and pool.slot_bytes >= seen[0].nbytes


def test_the_reserve_is_kept_for_a_run_of_the_same_shape_and_replaced_for_another() -> None:
    first = reserve(4096, 3)
    assert reserve(4096, 3) is first  # the next run of that frame size: no new mapping, no new touching
    other = reserve(8192, 3)
    assert other is not first and other.fits(8192, 3)
    release_reserve()
    assert reserve(8192, 3) is not other
    release_reserve()
