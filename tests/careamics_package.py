"""Build a bioimage.io package the way CAREamics 0.3.5 exports an N2V model, without CAREamics.

Why a script and not CAREamics itself: careamics 0.3.5 requires ``torchvision<=0.26``,
whose wheels pin ``torch==2.11``; this project runs torch 2.13.0 (CPU), so pip cannot
install careamics beside it (``pip install careamics==0.3.5 torch==2.13.0`` fails to
resolve). This script reproduces what CAREamics' ``export_to_bmz`` writes (read from its
``careamics/model_io/bioimage/model_description.py``):

* one input ``input`` and one output ``prediction``, axes ``batch, channel('channel'), y, x``
  with **fixed** y/x sizes equal to the test image's;
* preprocessing ``fixed_zero_mean_unit_variance`` along ``channel`` with the training
  data's mean and std; postprocessing the same operation with ``-mean / (std + eps)`` and
  ``1 / (std + eps) - eps``, which bioimageio.core evaluates as ``y * (std + eps) + mean``;
* test tensors ``inputs.npy`` / ``outputs.npy``; tags, BSD-3-Clause licence, N2V citation,
  ``config.bioimageio.test_kwargs`` tolerances of 1e-2.

CAREamics ships ``pytorch_state_dict`` weights whose architecture is
``careamics.models.unet.UNet``; without CAREamics that cannot be instantiated, so the
package carries the same network as **TorchScript** (one of the two formats the importer
takes directly). The network is a small 2-D U-Net trained with the N2V blind-spot loss
on simulated noisy fields for a few CPU seconds (``train_n2v``).

:func:`careamics_predict` is CAREamics' own prediction arithmetic on a whole image
(normalize with mean/std + eps, network, denormalize), the reference the test compares
smartscope's loop output against.

Run: ``python tests/careamics_package.py OUT.zip``.
"""

from __future__ import annotations

import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

EPS = 1e-6  # CAREamics' eps in (x - mean) / (std + eps)


@dataclass
class TrainedN2V:
    module: torch.jit.ScriptModule
    mean: float
    std: float


def simulated_fields(n: int, px: int, seed: int, photons: float = 20.0) -> np.ndarray:
    """Noisy sCMOS fields in ADU, (n, px, px) float32."""
    from smartscope.models.denoise.data import simulate

    data = simulate("fixed20", n_fields=n, field_px=px, seed=seed, photons=photons)
    return np.concatenate(data.noisy).astype(np.float32)


def train_n2v(fields: np.ndarray, steps: int = 40, seed: int = 0, batch: int = 8) -> TrainedN2V:
    """A depth-2, width-8 U-Net trained with the N2V loss on 32 px patches."""
    from smartscope.engines.networks.unet import UNet2D, UNetConfig
    from smartscope.models.denoise.network import n2v_loss, n2v_mask

    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    mean, std = float(fields.mean()), float(fields.std())
    norm = (fields - mean) / (std + EPS)
    net = UNet2D(UNetConfig(in_channels=1, out_channels=1, depth=2, base_width=8))
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    p = 32
    for _ in range(steps):
        idx = rng.integers(0, len(norm), batch)
        ys = rng.integers(0, norm.shape[1] - p + 1, batch)
        xs = rng.integers(0, norm.shape[2] - p + 1, batch)
        patches = np.stack([norm[i, y : y + p, x : x + p] for i, y, x in zip(idx, ys, xs, strict=True)])
        x = torch.from_numpy(patches[:, None])
        masked, mask = n2v_mask(x, 0.02, gen)
        loss = n2v_loss(net(masked), x, mask)
        opt.zero_grad()
        loss.backward()
        opt.step()
    net.eval()
    scripted = torch.jit.trace(net, torch.zeros(1, 1, 64, 64))
    return TrainedN2V(scripted, mean, std)


def careamics_predict(model: TrainedN2V, image: np.ndarray) -> np.ndarray:
    """CAREamics' prediction of one (H, W) image, whole: (x - m) / (s + eps) -> net -> y (s + eps) + m."""
    x = (image.astype(np.float32) - model.mean) / (model.std + EPS)
    with torch.inference_mode():
        y = model.module(torch.from_numpy(x[None, None].astype(np.float32))).numpy()[0, 0]
    return (y * (model.std + EPS) + model.mean).astype(np.float32)


def write_package(model: TrainedN2V, test_image: np.ndarray, out: Path) -> Path:
    """The bioimage.io zip, laid out as CAREamics' ``export_to_bmz`` lays it out."""
    from bioimageio.spec import save_bioimageio_package
    from bioimageio.spec.model import v0_5 as bmz

    tmp = Path(tempfile.mkdtemp(prefix="careamics-like-"))
    x = test_image.astype(np.float32)[None, None]
    y = careamics_predict(model, test_image)[None, None]
    np.save(tmp / "inputs.npy", x)
    np.save(tmp / "outputs.npy", y)
    model.module.save(str(tmp / "weights.pt"))
    (tmp / "README.md").write_text(
        "# N2V (CAREamics layout)\n\nNoise2Void U-Net built by tests/careamics_package.py.\n\n"
        "## Validation\n\nTest tensors reproduce CAREamics' prediction arithmetic.\n"
    )
    h, w = test_image.shape

    def axes(out_: bool) -> list[object]:
        space = bmz.SpaceOutputAxis if out_ else bmz.SpaceInputAxis
        return [
            bmz.BatchAxis(),
            bmz.ChannelAxis(channel_names=[bmz.Identifier("channel")]),
            space(id=bmz.AxisId("y"), size=h),
            space(id=bmz.AxisId("x"), size=w),
        ]

    inv_mean = -model.mean / (model.std + EPS)
    inv_std = 1 / (model.std + EPS) - EPS
    descr = bmz.ModelDescr(
        name="n2v-careamics-layout",
        description="Noise2Void denoiser in the layout CAREamics 0.3.5 exports",
        authors=[bmz.Author(name="smartscope tests")],
        cite=[
            bmz.CiteEntry(text="Krull et al. Noise2Void. CVPR 2019", doi=bmz.Doi("10.1109/CVPR.2019.00223"))
        ],
        license="BSD-3-Clause",  # type: ignore[arg-type]
        documentation=bmz.FileDescr(source=tmp / "README.md"),
        tags=["denoising", "restoration", "UNet", "2D", "Noise2Void", "n2v", "careamics"],
        inputs=[
            bmz.InputTensorDescr(
                id=bmz.TensorId("input"),
                axes=axes(False),  # type: ignore[arg-type]
                test_tensor=bmz.FileDescr(source=tmp / "inputs.npy"),
                preprocessing=[
                    bmz.FixedZeroMeanUnitVarianceDescr(
                        kwargs=bmz.FixedZeroMeanUnitVarianceAlongAxisKwargs(
                            mean=[model.mean], std=[model.std], axis=bmz.AxisId("channel")
                        )
                    )
                ],
            )
        ],
        outputs=[
            bmz.OutputTensorDescr(
                id=bmz.TensorId("prediction"),
                axes=axes(True),  # type: ignore[arg-type]
                test_tensor=bmz.FileDescr(source=tmp / "outputs.npy"),
                postprocessing=[
                    bmz.FixedZeroMeanUnitVarianceDescr(
                        kwargs=bmz.FixedZeroMeanUnitVarianceAlongAxisKwargs(
                            mean=[inv_mean], std=[inv_std], axis=bmz.AxisId("channel")
                        )
                    )
                ],
            )
        ],
        weights=bmz.WeightsDescr(
            torchscript=bmz.TorchscriptWeightsDescr(
                source=tmp / "weights.pt", pytorch_version=bmz.Version(torch.__version__.split("+")[0])
            )
        ),
        config=bmz.Config(  # type: ignore[call-arg]
            bioimageio={
                "test_kwargs": {"torchscript": {"absolute_tolerance": 1e-2, "relative_tolerance": 1e-2}}
            }
        ),
    )
    return save_bioimageio_package(descr, output_path=out)


def build(out: Path, *, px: int = 128, steps: int = 40, seed: int = 0) -> tuple[Path, TrainedN2V]:
    """Train on 6 simulated fields, test on a held-out one; write the package to ``out``."""
    train = simulated_fields(6, px, seed)
    model = train_n2v(train, steps=steps, seed=seed)
    test_image = simulated_fields(1, px, seed + 1)[0]
    return write_package(model, test_image, out), model


if __name__ == "__main__":  # pragma: no cover
    print(build(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("n2v-careamics-layout.zip"))[0])
