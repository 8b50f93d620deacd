"""Remote-operation throughput and latency on loopback.

1. PUB/SUB frames/s and MB/s at 512² and 2048² uint16: the smartscope wire format
   (msgpack header + zero-copy buffer, decoded and validated on the far side) against raw
   pyzmq sending the same buffers in the same run (multipart [topic, buffer], zero-copy,
   np.frombuffer on the far side). Both use XPUB with XPUB_NODROP (backpressure instead of
   drops, so every frame is counted), the same high-water marks and a receiver in another
   process; the two take turns, ``--repeats`` times each; the best turn (least disturbed
   by other processes) and the median turn are reported.
2. The added latency of a loopback worker stage: a `stats` stage run locally vs the same
   stage behind a ``smartscope worker`` process (p50/p99 per frame over ``--frames``),
   and the network share (round trip minus the worker's compute time).

    nice python bench/remote.py
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import statistics
import time
from typing import Any

import numpy as np
import zmq

from smartscope.config import RemoteStageConfig
from smartscope.frame import Frame
from smartscope.metrics import percentiles_ms
from smartscope.pipeline import FrameStatsStage
from smartscope.remote import wire
from smartscope.remote.stage import RemoteStage
from smartscope.remote.worker import spawn_worker


def _receiver(port: int, n: int, mode: str, shape: tuple[int, int], done: Any) -> None:
    ctx = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    sub.rcvhwm = 8
    sub.connect(f"tcp://127.0.0.1:{port}")
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    checksum = 0
    for _ in range(n):
        frames = sub.recv_multipart(copy=False)
        if mode == "wire":
            img = wire.decode(frames).arrays["image"]
        else:
            img = np.frombuffer(frames[1].buffer, np.uint16).reshape(shape)
        checksum += int(img[0, 0])
    done.send(checksum)
    sub.close(0)
    ctx.term()


def pubsub_once(mode: str, shape: tuple[int, int], n: int) -> float:
    """Seconds to move ``n`` frames of ``shape`` through PUB/SUB with ``mode``."""
    ctx = zmq.Context()
    pub = ctx.socket(zmq.XPUB)
    pub.sndhwm = 8
    pub.xpub_nodrop = True
    port = pub.bind_to_random_port("tcp://127.0.0.1")
    parent, child = mp.Pipe()
    proc = mp.get_context("fork").Process(target=_receiver, args=(port, n, mode, shape, child))
    proc.start()
    pub.recv()  # the subscription: the receiver is connected
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 4096, shape, dtype=np.uint16) for _ in range(4)]
    t0 = time.perf_counter()
    for i in range(n):
        img = frames[i % 4]
        if mode == "wire":
            wire.send(pub, "raw", {"index": i, "camera_time_s": 0.0, "channel": "", "seq": i}, {"image": img})
        else:
            pub.send_multipart([b"raw", img.data], copy=False)
    parent.recv()
    dt = time.perf_counter() - t0
    proc.join(10)
    pub.close(0)
    ctx.term()
    return dt


def bench_pubsub(repeats: int) -> None:
    print(f"PUB/SUB on loopback, {repeats} alternating turns each: best turn (median turn)")
    print(
        f"{'frame':>10} {'raw pyzmq f/s':>18} {'MB/s':>12} {'smartscope f/s':>18} {'MB/s':>12} "
        f"{'ratio best':>10} {'(median)':>9}"
    )
    for side, n in ((512, 2000), (2048, 150)):
        shape = (side, side)
        mb = side * side * 2 / 1e6
        times: dict[str, list[float]] = {"raw": [], "wire": []}
        for _ in range(repeats):
            for mode in ("raw", "wire"):
                times[mode].append(pubsub_once(mode, shape, n))
        best = {m: n / min(t) for m, t in times.items()}
        med = {m: n / statistics.median(t) for m, t in times.items()}

        def cell(m: str, scale: float, best: dict[str, float] = best, med: dict[str, float] = med) -> str:
            return f"{best[m] * scale:.0f} ({med[m] * scale:.0f})"

        print(
            f"{side:>5}x{side:<4} {cell('raw', 1):>18} {cell('raw', mb):>12} {cell('wire', 1):>18} "
            f"{cell('wire', mb):>12} {best['wire'] / best['raw']:>10.2f} {med['wire'] / med['raw']:>9.2f}"
        )


def bench_worker(n: int) -> None:
    proc, address = spawn_worker({"kind": "stats", "name": "s"})
    try:
        print(f"\nloopback worker stage ('stats' stage, {n} frames; ms per frame)")
        print(
            f"{'frame':>10} {'local p50':>10} {'p99':>7} {'remote p50':>11} {'p99':>7} "
            f"{'added p50':>10} {'p99':>7} {'network p50':>12} {'p99':>7}"
        )
        remote = RemoteStage(RemoteStageConfig(name="far", address=address, timeout_ms=5000))
        local = FrameStatsStage("near")
        rng = np.random.default_rng(1)
        for side in (512, 2048):
            img = rng.integers(100, 4000, (side, side), dtype=np.uint16)
            t_local: list[float] = []
            t_remote: list[float] = []
            t_net: list[float] = []
            for i in range(n + 5):
                f = Frame(i, img, time.time())
                t0 = time.perf_counter()
                local.process(f, {})
                t1 = time.perf_counter()
                out = remote.process(f, {})
                t2 = time.perf_counter()
                if i >= 5:  # warm-up
                    t_local.append(t1 - t0)
                    t_remote.append(t2 - t1)
                    t_net.append(out.values["remote_network_ms"] / 1e3)
            lo, re_, net = percentiles_ms(t_local), percentiles_ms(t_remote), percentiles_ms(t_net)
            added = percentiles_ms([r - q for r, q in zip(t_remote, t_local, strict=True)])
            print(
                f"{side:>5}x{side:<4} {lo['p50_ms']:>10.2f} {lo['p99_ms']:>7.2f} {re_['p50_ms']:>11.2f} "
                f"{re_['p99_ms']:>7.2f} {added['p50_ms']:>10.2f} {added['p99_ms']:>7.2f} "
                f"{net['p50_ms']:>12.2f} {net['p99_ms']:>7.2f}"
            )
        remote.close()
    finally:
        proc.terminate()
        proc.wait(10)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--frames", type=int, default=300, help="frames per worker-latency size")
    a = p.parse_args()
    bench_pubsub(a.repeats)
    bench_worker(a.frames)


if __name__ == "__main__":
    main()
