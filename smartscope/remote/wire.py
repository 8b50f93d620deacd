"""The smartscope wire format: one msgpack header plus raw array buffers. Never pickle.

A message is a ZMQ multipart message::

    [topic] [header] [buffer 0] [buffer 1] ...

* ``topic``: ASCII bytes (``raw``, ``processed``, ``localizations``, ``analysis``,
  ``event``, ``action``, ``telemetry``, or a control/worker verb); SUB sockets filter on it.
* ``header``: a msgpack map ``{"v": 1, "meta": {...}, "arrays": [{"name", "dtype",
  "shape"}, ...]}``. ``meta`` holds only msgpack-native values (str, int, float, bool,
  None, lists, maps with str keys).
* one buffer per entry of ``arrays``: the C-contiguous bytes of the array, little-endian,
  sent zero-copy (``copy=False``) by :func:`send`.

Decoding is strict: version, frame count, dtype whitelist, ndim, shape/byte-count
agreement and size limits are checked; anything else raises :class:`WireError` with
the reason (servers count and refuse such messages, they never crash on them).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgpack
import numpy as np
import zmq

from smartscope.exceptions import UserError

__all__ = [
    "DTYPES",
    "MAX_ARRAYS",
    "MAX_ARRAY_BYTES",
    "MAX_HEADER_BYTES",
    "VERSION",
    "Message",
    "WireError",
    "decode",
    "encode",
    "jsonable",
    "recv",
    "send",
]

VERSION = 1
MAX_HEADER_BYTES = 1 << 20  # 1 MiB of metadata
MAX_ARRAYS = 64
MAX_ARRAY_BYTES = 1 << 30  # 1 GiB per buffer (a 16k x 16k uint32 frame)
MAX_TOPIC_BYTES = 64
MAX_NDIM = 4
DTYPES = frozenset({"uint8", "uint16", "uint32", "int16", "int32", "int64", "float32", "float64", "bool"})


class WireError(UserError, ValueError):
    """A message that is not a valid smartscope wire message (the reason says why)."""


@dataclass
class Message:
    topic: str
    meta: dict[str, Any] = field(default_factory=dict)
    arrays: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in self.arrays.values())


def _le(arr: np.ndarray) -> np.ndarray:
    arr = np.asarray(arr)
    if arr.dtype.name not in DTYPES:
        raise WireError(f"array dtype {arr.dtype} is not one of {sorted(DTYPES)}")
    if arr.ndim > MAX_NDIM:
        raise WireError(f"array has {arr.ndim} dimensions; at most {MAX_NDIM}")
    if arr.dtype.byteorder == ">":
        arr = arr.astype(arr.dtype.newbyteorder("<"))
    return np.ascontiguousarray(arr)


def encode(
    topic: str, meta: Mapping[str, Any] | None = None, arrays: Mapping[str, np.ndarray] | None = None
) -> list[bytes | memoryview]:
    """Frames for one message; array buffers are memoryviews of the (contiguous) arrays."""
    t = topic.encode("ascii")
    if not t or len(t) > MAX_TOPIC_BYTES:
        raise WireError(f"topic must be 1..{MAX_TOPIC_BYTES} ASCII bytes, got {topic!r}")
    specs: list[dict[str, Any]] = []
    bufs: list[bytes | memoryview] = []
    for name, arr in (arrays or {}).items():
        a = _le(arr)
        if a.nbytes > MAX_ARRAY_BYTES:
            raise WireError(f"array {name!r} is {a.nbytes} bytes; limit {MAX_ARRAY_BYTES}")
        specs.append({"name": name, "dtype": a.dtype.name, "shape": list(a.shape)})
        bufs.append(a.data.cast("B") if a.nbytes else b"")
    if len(specs) > MAX_ARRAYS:
        raise WireError(f"{len(specs)} arrays; at most {MAX_ARRAYS}")
    try:
        header = msgpack.packb({"v": VERSION, "meta": dict(meta or {}), "arrays": specs}, use_bin_type=True)
    except (TypeError, ValueError, OverflowError) as exc:
        raise WireError(f"meta is not msgpack-serializable: {exc}") from None
    if len(header) > MAX_HEADER_BYTES:
        raise WireError(f"header is {len(header)} bytes; limit {MAX_HEADER_BYTES}")
    return [t, header, *bufs]


def _bytes_of(part: Any) -> memoryview:
    if isinstance(part, zmq.Frame):
        return part.buffer
    return memoryview(part)


def decode(frames: Sequence[Any], copy: bool = False) -> Message:
    """Parse and validate a multipart message (bytes, memoryviews or ``zmq.Frame``).

    Arrays are views of the received buffers unless ``copy``; they are read-only.
    """
    if len(frames) < 2:
        raise WireError(f"a message has at least 2 frames (topic, header), got {len(frames)}")
    topic_b = bytes(_bytes_of(frames[0]))
    if not topic_b or len(topic_b) > MAX_TOPIC_BYTES:
        raise WireError(f"topic frame is {len(topic_b)} bytes; must be 1..{MAX_TOPIC_BYTES}")
    try:
        topic = topic_b.decode("ascii")
    except UnicodeDecodeError:
        raise WireError("topic is not ASCII") from None
    hb = _bytes_of(frames[1])
    if hb.nbytes > MAX_HEADER_BYTES:
        raise WireError(f"header is {hb.nbytes} bytes; limit {MAX_HEADER_BYTES}")
    try:
        header = msgpack.unpackb(hb, raw=False, strict_map_key=True, use_list=True)
    except Exception as exc:  # msgpack raises several unrelated types on garbage
        raise WireError(f"header is not valid msgpack: {type(exc).__name__}: {exc}") from None
    if not isinstance(header, dict):
        raise WireError(f"header must be a map, got {type(header).__name__}")
    if header.get("v") != VERSION:
        raise WireError(f"header.v: unsupported version {header.get('v')!r} (this side speaks {VERSION})")
    meta = header.get("meta", {})
    if not isinstance(meta, dict):
        raise WireError(f"header.meta must be a map, got {type(meta).__name__}")
    specs = header.get("arrays", [])
    if not isinstance(specs, list) or len(specs) > MAX_ARRAYS:
        raise WireError(f"header.arrays must be a list of at most {MAX_ARRAYS} entries")
    if len(frames) != 2 + len(specs):
        raise WireError(f"header announces {len(specs)} arrays but {len(frames) - 2} buffers came")
    arrays: dict[str, np.ndarray] = {}
    for i, spec in enumerate(specs):
        if not isinstance(spec, dict):
            raise WireError(f"header.arrays[{i}] must be a map")
        name, dtype, shape = spec.get("name"), spec.get("dtype"), spec.get("shape")
        if not isinstance(name, str) or not name or name in arrays:
            raise WireError(f"header.arrays[{i}].name must be a unique non-empty string, got {name!r}")
        if dtype not in DTYPES:
            raise WireError(f"header.arrays[{i}].dtype {dtype!r} is not one of {sorted(DTYPES)}")
        if (
            not isinstance(shape, list)
            or len(shape) > MAX_NDIM
            or not all(isinstance(s, int) and not isinstance(s, bool) and 0 <= s < 1 << 31 for s in shape)
        ):
            raise WireError(
                f"header.arrays[{i}].shape must be up to {MAX_NDIM} non-negative ints, got {shape!r}"
            )
        dt = np.dtype(dtype).newbyteorder("<")
        expected = math.prod(shape) * dt.itemsize
        if expected > MAX_ARRAY_BYTES:
            raise WireError(
                f"header.arrays[{i}] ({name!r}) would be {expected} bytes; limit {MAX_ARRAY_BYTES}"
            )
        buf = _bytes_of(frames[2 + i])
        if buf.nbytes != expected:
            raise WireError(
                f"header.arrays[{i}] ({name!r}): shape {shape} {dtype} needs {expected} bytes, "
                f"buffer has {buf.nbytes}"
            )
        arr = np.frombuffer(buf, dtype=dt).reshape(shape) if expected else np.zeros(shape, dt)
        arrays[name] = arr.copy() if copy else arr
    return Message(topic, meta, arrays)


def send(
    sock: zmq.Socket[Any],
    topic: str,
    meta: Mapping[str, Any] | None = None,
    arrays: Mapping[str, np.ndarray] | None = None,
    flags: int = 0,
    envelope: Sequence[bytes] = (),
) -> None:
    """Encode and send; big buffers go zero-copy. ``envelope``: ROUTER routing frames."""
    frames = encode(topic, meta, arrays)
    copy = sum(len(f) for f in frames[2:]) < 65536  # small messages: copying is cheaper
    sock.send_multipart([*envelope, *frames], flags=flags, copy=copy)


def recv(sock: zmq.Socket[Any], flags: int = 0) -> Message:
    """Receive one message and decode it (raises :class:`WireError` if malformed)."""
    frames = sock.recv_multipart(flags=flags, copy=False)
    return decode(frames)


def jsonable(obj: Any) -> Any:
    """Plain JSON types only (numpy scalars, paths, tuples become JSON values)."""
    return json.loads(json.dumps(obj, default=lambda o: o.item() if hasattr(o, "item") else str(o)))
