"""``--cluster`` parsing and the SLURM job dask-jobqueue would submit (no SLURM needed)."""

from __future__ import annotations

import os

import pytest

from smartscope.batch.cluster import ClusterError, ClusterSpec, parse_cluster

CORES = os.cpu_count() or 1


@pytest.mark.parametrize(
    ("text", "workers", "n_inputs", "want"),
    [
        (None, None, 1, ClusterSpec("none")),
        (None, None, 3, ClusterSpec("local", CORES)),  # many inputs: a LocalCluster by default
        (None, 2, 1, ClusterSpec("local", 2)),  # more than one worker asked: likewise
        ("none", None, 5, ClusterSpec("none")),
        ("local", None, 1, ClusterSpec("local", CORES)),
        ("local", 3, 1, ClusterSpec("local", 3)),
        ("local:4", None, 1, ClusterSpec("local", 4)),
        ("local:4", 4, 1, ClusterSpec("local", 4)),
        ("tcp://10.0.0.5:8786", None, 1, ClusterSpec("address", 1, "tcp://10.0.0.5:8786")),
        ("tls://sched:8786", None, 9, ClusterSpec("address", 1, "tls://sched:8786")),
        ("slurm", None, 1, ClusterSpec("slurm", 1)),
        ("slurm:16", None, 1, ClusterSpec("slurm", 16)),
    ],
)
def test_cluster_specs(text: str | None, workers: int | None, n_inputs: int, want: ClusterSpec) -> None:
    assert parse_cluster(text, workers=workers, n_inputs=n_inputs) == want


@pytest.mark.parametrize(
    ("text", "workers", "match"),
    [
        ("local:x", None, "'x' is not a number of workers"),
        ("local:0", None, "must be >= 1"),
        ("local:2", 3, "disagree"),
        ("none", 2, "needs a cluster"),
        ("k8s", None, "expected none, local, local:N, slurm"),
        (None, 0, "--workers must be >= 1"),
    ],
)
def test_bad_cluster_specs_say_why(text: str | None, workers: int | None, match: str) -> None:
    with pytest.raises(ClusterError, match=match):
        parse_cluster(text, workers=workers, n_inputs=1)


def test_gpu_on_a_machine_without_one_is_refused() -> None:
    from smartscope.batch.cluster import gpu_count

    if gpu_count():
        pytest.skip("this machine has a GPU")
    with pytest.raises(ClusterError, match="no CUDA GPU is visible"):
        parse_cluster("local", workers=None, n_inputs=1, gpu=True)


def test_slurm_jobs_ask_for_a_gpu_and_declare_the_resource() -> None:
    pytest.importorskip("dask_jobqueue")
    import dask

    from smartscope.batch.cluster import _slurm_cluster

    conf = {
        "jobqueue.slurm.cores": 8,
        "jobqueue.slurm.memory": "32GB",
        "jobqueue.slurm.queue": "gpu",
        "jobqueue.slurm.walltime": "02:00:00",
        "jobqueue.slurm.scheduler-options": {"dashboard_address": None},
    }
    with dask.config.set(conf), _slurm_cluster(ClusterSpec("slurm", 2), gpu=True) as cluster:
        script = cluster.job_script()
    assert "#SBATCH --gres=gpu:1" in script and "#SBATCH -p gpu" in script
    assert "--resources GPU=1" in script and "--nworkers" not in script  # one worker owns the GPU
    with (
        dask.config.set({"jobqueue.slurm.cores": None, "jobqueue.slurm.memory": None}),
        pytest.raises(ClusterError, match=r"jobqueue\.yaml"),
    ):
        _slurm_cluster(ClusterSpec("slurm", 1), gpu=False)
