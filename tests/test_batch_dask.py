"""Localize and apply on real Dask clusters of 2 worker processes: same answer as one
process, engines opened once per worker, a killed worker's chunks rerun elsewhere, bad
data reported by file and frame range while the other stacks are written."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tifffile
from typer.testing import CliRunner

from smartscope.batch.cluster import ClusterError, ClusterSpec, connect
from smartscope.batch.jobs import ChunkDone, ChunkOutcome, PartStore, execute, process_builds
from smartscope.batch.stacks import resolve_inputs
from smartscope.cli import app
from smartscope.models import shipped_bundle
from smartscope.models.smlm.batch import LocalizeJob, output_folders
from smartscope.models.smlm.stage import SMLMStageConfig
from smartscope.models.smlm.table import LocTable
from smartscope.simulators.datasets import denoise_pairs, smlm_frames
from tests.test_batch_stacks import write_ome_zarr

distributed = pytest.importorskip("distributed")
runner = CliRunner()


@pytest.fixture(scope="module")
def cluster() -> Iterator[Any]:
    """``--cluster local:2`` as the commands start it (two worker processes with nannies);
    the tests reach it through its scheduler address. The test that kills a worker runs last."""
    with connect(ClusterSpec("local", 2)) as client:
        yield client.cluster


@pytest.fixture(scope="module")
def smlm_data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """240 SMLM frames as a TIFF (enough for the drift estimate) and 40 as an OME-Zarr."""
    root = tmp_path_factory.mktemp("smlm")
    frames, _, _ = smlm_frames(240, (64, 64), seed=1)
    tifffile.imwrite(root / "blink.tif", frames)
    more, _, _ = smlm_frames(40, (64, 64), seed=2)
    write_ome_zarr(root / "more.ome.zarr", more[:, None, None], "tczyx", 0.1)
    return root / "blink.tif", root / "more.ome.zarr"


@pytest.fixture(scope="module")
def reference(smlm_data: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same inputs localized in one process: ``<out>/blink/``, ``<out>/more/``."""
    out = tmp_path_factory.mktemp("one")
    _localize(*map(str, smlm_data), "-o", str(out), "--cluster", "none", "--drift-correct")
    return out


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.suffix in (".csv", ".json")}


def _localize(*args: str) -> None:
    res = runner.invoke(app, ["localize", *args])
    assert res.exit_code == 0, res.output


def test_localize_on_a_cluster_equals_one_process(
    cluster: Any, smlm_data: tuple[Path, Path], reference: Path, tmp_path: Path
) -> None:
    out = tmp_path / "dask"
    address = cluster.scheduler_address
    _localize(
        *map(str, smlm_data), "-o", str(out), "--cluster", address, "--chunk-frames", "50", "--drift-correct"
    )
    for name in ("blink", "more"):
        one, dask = _files(reference / name), _files(out / name)
        assert one == dask and "localizations.csv" in one
        a = tifffile.imread(reference / name / "superres_gaussian.tif")
        np.testing.assert_array_equal(a, tifffile.imread(out / name / "superres_gaussian.tif"))
    drift = json.loads((out / "blink" / "drift.json").read_text())  # from the merged table: 240 frames
    assert drift["applied"] and len(drift["dx_nm"]) == 2 and "drift.json" not in _files(out / "more")
    tab = LocTable.read_csv(out / "blink" / "localizations.csv")
    assert tab.frame.min() < 50 and tab.frame.max() >= 200 and np.all(np.diff(tab.frame) >= 0)
    assert not (out / ".parts").exists()


def test_network_chunks_see_their_neighbour_frames_and_open_the_engine_once(
    cluster: Any, smlm_data: tuple[Path, Path], tmp_path: Path
) -> None:
    frames = tifffile.imread(smlm_data[0])[:60]
    tifffile.imwrite(tmp_path / "short.tif", frames)
    stacks = resolve_inputs([tmp_path / "short.tif"])
    cfg = SMLMStageConfig(method="network", bundle=shipped_bundle("smlm-decode-small"), psf_sigma_nm=101.25)

    def job(out: Path) -> LocalizeJob:
        return LocalizeJob(tuple(stacks), (cfg,), output_folders(stacks, out), PartStore(out, {"t": 1}), 1)

    single = execute(job(tmp_path / "one"))
    with distributed.Client(cluster) as client:
        report = execute(job(tmp_path / "dask"), client=client, chunk_frames=10)
        builds = client.run(process_builds)
    assert not single.failures and not report.failures
    # every chunk boundary is a (t-1, t, t+1) window the chunk had to read across
    assert _files(tmp_path / "one") == _files(tmp_path / "dask")
    done = [o for o in report.outcomes or [] if isinstance(o, ChunkDone)]
    assert len(done) == 6
    per_worker: dict[str, int] = {}
    for o in done:
        per_worker[o.worker.split(":")[-1]] = per_worker.get(o.worker.split(":")[-1], 0) + 1
    assert max(per_worker.values()) >= 2
    stage_builds = {
        addr: [n for key, n in b.items() if "smlm-stage" in key and "101.25" in key]
        for addr, b in builds.items()
    }
    ran = [addr for addr, keys in stage_builds.items() if keys]
    assert len(ran) == len(per_worker)
    assert all(stage_builds[a] == [1] for a in ran), stage_builds  # one engine per worker, kept


def _corrupt_page(path: Path, page: int) -> None:
    """Zero the compressed data of one page: that frame no longer decompresses."""
    with tifffile.TiffFile(path) as tf:
        p = tf.pages[page]
        off, n = p.dataoffsets[0], p.databytecounts[0]
    raw = bytearray(path.read_bytes())
    raw[off + 2 : off + n - 2] = bytes(n - 4)
    path.write_bytes(bytes(raw))


def test_a_bad_chunk_is_reported_and_the_other_stacks_are_written(
    cluster: Any, smlm_data: tuple[Path, Path], tmp_path: Path
) -> None:
    tif, _ = smlm_data
    frames = tifffile.imread(tif)[:64]
    bad = tmp_path / "bad.tif"
    tifffile.imwrite(bad, frames, compression="zlib")
    _corrupt_page(bad, 37)
    out = tmp_path / "out"
    args = [
        "localize",
        str(tif),
        str(bad),
        "-o",
        str(out),
        "--cluster",
        cluster.scheduler_address,
        "--chunk-frames",
        "16",
    ]
    res = runner.invoke(app, args)
    assert res.exit_code == 1
    assert f"failed: {bad} frames 32-47: FrameError: frame 37:" in res.output
    assert (out / "blink" / "localizations.csv").is_file()  # the good stack is written
    assert not (out / "bad").exists()
    doc = json.loads((out / "failures.json").read_text())
    assert [(d["file"], d["first_frame"], d["last_frame"]) for d in doc] == [(str(bad), 32, 47)]
    assert len(list((out / ".parts" / "bad").iterdir())) == 3  # its good chunks stay for a rerun
    again = runner.invoke(app, args)
    assert again.exit_code == 1 and "resumed: 3 chunk(s)" in again.output


def test_apply_on_a_cluster_equals_one_process(cluster: Any, tmp_path: Path) -> None:
    noisy, _ = denoise_pairs(10, (96, 80), seed=4)
    srcs = []
    for k in range(2):
        p = tmp_path / f"s{k}.ome.tif"
        tifffile.imwrite(
            p,
            noisy.astype(np.uint16)[k * 3 :],
            ome=True,
            photometric="minisblack",
            metadata={"axes": "TYX", "PhysicalSizeX": 0.2, "PhysicalSizeXUnit": "µm", "PhysicalSizeY": 0.2},
        )
        srcs.append(str(p))
    bundle = str(shipped_bundle("denoise-n2v-lowlight"))
    one = runner.invoke(app, ["apply", bundle, *srcs, "-o", str(tmp_path / "one"), "--cluster", "none"])
    assert one.exit_code == 0, one.output
    dask = runner.invoke(
        app,
        [
            "apply",
            bundle,
            *srcs,
            "-o",
            str(tmp_path / "dask"),
            "--cluster",
            cluster.scheduler_address,
            "--chunk-frames",
            "3",
        ],
    )
    assert dask.exit_code == 0, dask.output
    for k in range(2):
        a, b = (tmp_path / d / f"s{k}.denoised.ome.tif" for d in ("one", "dask"))
        with tifffile.TiffFile(a) as ta, tifffile.TiffFile(b) as tb:
            assert ta.series[0].shape == tb.series[0].shape == (10 - 3 * k, 96, 80)
            np.testing.assert_array_equal(ta.series[0].asarray(), tb.series[0].asarray())
            assert 'PhysicalSizeX="0.2"' in (tb.ome_metadata or "")


def test_gpu_chunks_need_workers_that_declare_a_gpu(cluster: Any) -> None:
    with (
        pytest.raises(ClusterError, match=r"start GPU workers with `dask worker \.\.\. --resources GPU=1`"),
        connect(ClusterSpec("address", 1, cluster.scheduler_address), gpu=True),
    ):
        pass


def test_a_killed_worker_has_its_chunks_rerun_on_the_others(
    cluster: Any, smlm_data: tuple[Path, Path], reference: Path, tmp_path: Path
) -> None:
    """Runs last: it kills a worker of the module's cluster (its nanny starts a new one)."""
    stacks = resolve_inputs([smlm_data[0]])
    out = tmp_path / "dask"
    job = LocalizeJob(
        tuple(stacks), (SMLMStageConfig(),), (out,), PartStore(out, {"t": 2}), 1, drift_correct=True
    )
    killed: dict[str, Any] = {}
    with distributed.Client(cluster) as client:

        def kill_one(outcome: ChunkOutcome) -> None:
            if killed:
                return
            busy = {w: keys for w, keys in client.processing().items() if keys}
            addr = sorted(busy)[0]
            killed["pid"] = client.run(os.getpid, workers=[addr])[addr]
            killed["chunks"] = {int(str(k).rsplit("-", 3)[-2]) for k in busy[addr]}  # their start frames
            os.kill(killed["pid"], signal.SIGKILL)

        report = execute(job, client=client, chunk_frames=30, on_outcome=kill_one)
    assert killed["chunks"], "the killed worker had chunks in hand"
    assert not report.failures
    done = {o.chunk.start: o for o in report.outcomes or [] if isinstance(o, ChunkDone)}
    assert sorted(done) == list(range(0, 240, 30))  # every chunk exactly once
    for start in killed["chunks"]:
        assert not done[start].worker.endswith(f":{killed['pid']}")  # rerun by another worker
    one = LocTable.read_csv(reference / "blink" / "localizations.csv")
    merged = LocTable.read_csv(out / "localizations.csv")
    assert len(merged) == len(one) and np.array_equal(merged.frame, one.frame)  # no frame twice or missing
    assert _files(reference / "blink") == _files(out)
