"""The remote wire format: exact round trips, strict refusal of anything else."""

from __future__ import annotations

import contextlib

import msgpack
import numpy as np
import pytest

from smartscope.remote import wire
from smartscope.remote.client import Client


def _hdr(dtype: str, shape: list[int], name: object = "a") -> bytes:
    out = msgpack.packb({"v": 1, "arrays": [{"name": name, "dtype": dtype, "shape": shape}]})
    assert isinstance(out, bytes)
    return out


def _frames(parts: list[bytes | memoryview]) -> list[bytes]:
    return [bytes(p) for p in parts]


def test_round_trip_is_bit_exact_for_every_dtype() -> None:
    rng = np.random.default_rng(0)
    arrays: dict[str, np.ndarray] = {
        "image": rng.integers(0, 65535, (64, 48), dtype=np.uint16),
        "denoised": rng.normal(size=(2, 16, 16)).astype(np.float32),
        "x_nm": rng.normal(size=100),
        "mask": rng.random((8, 8)) > 0.5,
        "empty": np.zeros((0, 5), np.float32),
    }
    meta = {"index": 7, "camera_time_s": 1.25, "channel": "GFP", "nested": {"a": [1, 2.5, None]}}
    msg = wire.decode(_frames(wire.encode("raw", meta, arrays)))
    assert msg.topic == "raw"
    assert msg.meta == meta
    assert list(msg.arrays) == list(arrays)
    for k, a in arrays.items():
        assert msg.arrays[k].dtype == a.dtype and msg.arrays[k].shape == a.shape
        np.testing.assert_array_equal(msg.arrays[k], a)


def test_non_contiguous_and_big_endian_arrays_are_sent_as_little_endian_c_order() -> None:
    a = np.arange(100, dtype=">u2").reshape(10, 10)[:, ::2]
    msg = wire.decode(_frames(wire.encode("raw", {}, {"a": a})))
    np.testing.assert_array_equal(msg.arrays["a"], a)
    assert msg.arrays["a"].dtype == np.dtype("<u2")


def test_the_image_buffer_is_sent_without_a_copy() -> None:
    a = np.arange(256 * 256, dtype=np.uint16).reshape(256, 256)
    parts = wire.encode("raw", {}, {"image": a})
    buf = parts[2]
    assert isinstance(buf, memoryview)
    assert np.shares_memory(np.frombuffer(buf, np.uint16), a)


@pytest.mark.parametrize(
    ("frames", "reason"),
    [
        ([b"raw"], "at least 2 frames"),
        ([b"", b"x"], "topic frame"),
        ([b"\xff\xfe", msgpack.packb({"v": 1})], "not ASCII"),
        ([b"raw", b"\xc1\x00garbage"], "not valid msgpack"),
        ([b"raw", msgpack.packb([1, 2])], "must be a map"),
        ([b"raw", msgpack.packb({"v": 99})], "unsupported version"),
        ([b"raw", msgpack.packb({"v": 1, "meta": 3})], "meta must be a map"),
        (
            [b"raw", _hdr("uint16", [2])],
            "announces 1",
        ),
        (
            [
                b"raw",
                _hdr("object", [2]),
                b"1234",
            ],
            "dtype 'object'",
        ),
        (
            [
                b"raw",
                _hdr("uint16", [3]),
                b"1234",
            ],
            "needs 6 bytes, buffer has 4",
        ),
        (
            [
                b"raw",
                _hdr("uint16", [-1]),
                b"",
            ],
            "non-negative ints",
        ),
        (
            [
                b"raw",
                msgpack.packb(
                    {"v": 1, "arrays": [{"name": "a", "dtype": "float64", "shape": [1 << 30, 1 << 30]}]}
                ),
                b"",
            ],
            "limit",
        ),
        (
            [b"raw", _hdr("uint8", [1], name=5), b"1"],
            "name",
        ),
    ],
)
def test_malformed_messages_are_refused_with_the_reason(frames: list[bytes], reason: str) -> None:
    with pytest.raises(wire.WireError, match=reason):
        wire.decode(frames)


def test_random_bytes_never_raise_anything_but_wire_error() -> None:
    rng = np.random.default_rng(1)
    valid = _frames(wire.encode("raw", {"i": 1}, {"image": np.ones((4, 4), np.uint16)}))
    for _ in range(2000):
        n = int(rng.integers(0, 5))
        frames = [rng.bytes(int(rng.integers(0, 64))) for _ in range(n)]
        if rng.random() < 0.5:  # truncations and bit flips of a valid message
            parts = [bytearray(f) for f in valid]
            part = int(rng.integers(0, len(parts)))
            if parts[part]:
                cut = int(rng.integers(0, len(parts[part])))
                if rng.random() < 0.5:
                    parts[part] = parts[part][:cut]
                else:
                    parts[part][cut] ^= 0xFF
            frames = [bytes(f) for f in parts]
        with contextlib.suppress(wire.WireError):
            wire.decode(frames)


def test_encode_refuses_unsendable_input() -> None:
    with pytest.raises(wire.WireError, match="dtype"):
        wire.encode("raw", {}, {"a": np.array(["x"])})
    with pytest.raises(wire.WireError, match="msgpack"):
        wire.encode("raw", {"obj": object()})
    with pytest.raises(wire.WireError, match="topic"):
        wire.encode("", {})


def test_client_counts_each_gap_in_a_topic_sequence_as_drops() -> None:
    c = Client.__new__(Client)
    c._last_seq, c.received, c.dropped = {}, {}, {}
    for seq in (0, 1, 4, 5, 9):
        c._count(wire.Message("raw", {"seq": seq}))
    c._count(wire.Message("telemetry", {"seq": 0}))
    assert c.received == {"raw": 5, "telemetry": 1}
    assert c.dropped == {"raw": 2 + 3}
