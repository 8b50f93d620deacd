"""bioimage.io model packages shaped like the Model Zoo's, built with bioimageio.spec's own API.

Each package holds a small seeded convolutional network (ONNX weights), one input and one
output with axes ``batch, channel, y, x``, the pre- and postprocessing the Zoo uses, and a
test output computed by **bioimageio.core's own prediction** of the test input, so the
package passes ``bioimageio test`` and its test output is the Zoo's arithmetic, not ours.

The processing variants (:data:`VARIANTS`) cover what the Model Zoo's models declare:
per-sample ``zero_mean_unit_variance`` over all axes of a sample (the most common) and per
channel, per-dataset ``zero_mean_unit_variance``, ``scale_range`` per channel,
``scale_linear`` per channel then ``clip``, and a segmentation-like output with ``sigmoid``
and ``binarize``.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np


def _network(n_in: int, n_out: int, seed: int) -> bytes:
    """A seeded 3x3 convolution, a tanh, a 1x1 convolution: ONNX bytes with dynamic N/H/W."""
    import torch

    from smartscope.engines.export import export_onnx

    torch.manual_seed(seed)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(n_in, 4, 3, padding=1), torch.nn.Tanh(), torch.nn.Conv2d(4, n_out, 1)
    )
    return export_onnx(net, n_in, input_name="raw", output_names=["prediction"], example_hw=32)


def _variants() -> dict[str, dict[str, Any]]:
    from bioimageio.spec.model import v0_5 as bmz

    a = bmz.AxisId
    zmuv = bmz.ZeroMeanUnitVarianceDescr
    return {
        "per-sample zero_mean_unit_variance": {
            "channels": 1,
            "pre": [zmuv(kwargs=bmz.ZeroMeanUnitVarianceKwargs(axes=[a("channel"), a("y"), a("x")]))],
            "post": [],
        },
        "per-sample zero_mean_unit_variance per channel": {
            "channels": 2,
            "pre": [zmuv(kwargs=bmz.ZeroMeanUnitVarianceKwargs(axes=[a("y"), a("x")]))],
            "post": [],
        },
        "per-dataset zero_mean_unit_variance": {
            "channels": 1,
            "pre": [
                zmuv(kwargs=bmz.ZeroMeanUnitVarianceKwargs(axes=[a("batch"), a("channel"), a("y"), a("x")]))
            ],
            "post": [],
        },
        "scale_range per channel": {
            "channels": 2,
            "pre": [
                bmz.ScaleRangeDescr(
                    kwargs=bmz.ScaleRangeKwargs(
                        axes=[a("y"), a("x")], min_percentile=1.0, max_percentile=99.8
                    )
                )
            ],
            "post": [],
        },
        "scale_linear per channel and clip": {
            "channels": 2,
            "pre": [
                bmz.ScaleLinearDescr(
                    kwargs=bmz.ScaleLinearAlongAxisKwargs(
                        axis=a("channel"), gain=[0.01, 0.02], offset=[-1.0, -2.0]
                    )
                ),
                bmz.ClipDescr(kwargs=bmz.ClipKwargs(min=-1.5, max=1.5)),
            ],
            "post": [],
        },
        "sigmoid and binarize": {
            "channels": 1,
            "pre": [zmuv(kwargs=bmz.ZeroMeanUnitVarianceKwargs(axes=[a("channel"), a("y"), a("x")]))],
            "post": [bmz.SigmoidDescr(), bmz.BinarizeDescr(kwargs=bmz.BinarizeKwargs(threshold=0.5))],
        },
    }


VARIANTS = (
    "per-sample zero_mean_unit_variance",
    "per-sample zero_mean_unit_variance per channel",
    "per-dataset zero_mean_unit_variance",
    "scale_range per channel",
    "scale_linear per channel and clip",
    "sigmoid and binarize",
)


def build(variant: str, out: Path, *, px: int = 48, seed: int = 0) -> tuple[Path, np.ndarray, np.ndarray]:
    """Write the package of ``variant`` to ``out`` (a .zip); return it, its test input
    (1, C, H, W) and the test output bioimageio.core predicted (1, C, H, W)."""
    from bioimageio.core import predict
    from bioimageio.spec import save_bioimageio_package
    from bioimageio.spec.model import v0_5 as bmz

    spec = _variants()[variant]
    n = int(spec["channels"])
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:px, :px]
    base = 300 + 200 * np.sin(yy / 5.0) * np.cos(xx / 7.0)
    x = np.stack([rng.poisson(base * (1 + c)).astype(np.float32) + 100 for c in range(n)])[None]
    tmp = Path(tempfile.mkdtemp(prefix="zoo-package-"))
    (tmp / "model.onnx").write_bytes(_network(n, n, seed))
    (tmp / "README.md").write_text(f"# {variant}\n\nA Zoo-shaped package built by tests/zoo_packages.py.\n")
    np.save(tmp / "input.npy", x)

    def axes(output: bool) -> list[Any]:
        names = [bmz.Identifier(f"c{c}") for c in range(n)]
        if output:
            space: list[Any] = [
                bmz.SpaceOutputAxis(
                    id=bmz.AxisId(k),
                    size=bmz.SizeReference(tensor_id=bmz.TensorId("raw"), axis_id=bmz.AxisId(k)),
                )
                for k in ("y", "x")
            ]
        else:
            space = [
                bmz.SpaceInputAxis(id=bmz.AxisId(k), size=bmz.ParameterizedSize(min=16, step=8))
                for k in ("y", "x")
            ]
        return [bmz.BatchAxis(), bmz.ChannelAxis(channel_names=names), *space]

    def descr(y_path: Path) -> Any:
        return bmz.ModelDescr(
            name=f"zoo-{variant.replace(' ', '-')}"[:128],
            description=f"Zoo-shaped test package: {variant}",
            authors=[bmz.Author(name="smartscope tests")],
            cite=[
                bmz.CiteEntry(
                    text="Ouyang et al. BioImage Model Zoo. 2022", doi=bmz.Doi("10.1101/2022.06.07.495102")
                )
            ],
            license="BSD-3-Clause",  # type: ignore[arg-type]
            documentation=bmz.FileDescr(source=tmp / "README.md"),
            tags=["segmentation" if spec["post"] else "restoration", "2d"],
            inputs=[
                bmz.InputTensorDescr(
                    id=bmz.TensorId("raw"),
                    axes=axes(False),
                    test_tensor=bmz.FileDescr(source=tmp / "input.npy"),
                    preprocessing=list(spec["pre"]),
                )
            ],
            outputs=[
                bmz.OutputTensorDescr(
                    id=bmz.TensorId("prediction"),
                    axes=axes(True),
                    test_tensor=bmz.FileDescr(source=y_path),
                    postprocessing=list(spec["post"]),
                )
            ],
            weights=bmz.WeightsDescr(onnx=bmz.OnnxWeightsDescr(source=tmp / "model.onnx", opset_version=17)),
        )

    np.save(tmp / "placeholder.npy", np.ones_like(x))  # replaced by the prediction below
    got = predict(model=descr(tmp / "placeholder.npy"), inputs=x)  # the Zoo's arithmetic
    y = np.asarray(next(iter(got.members.values())).data.values, np.float32)
    np.save(tmp / "output.npy", y)
    return save_bioimageio_package(descr(tmp / "output.npy"), output_path=out), x, y
