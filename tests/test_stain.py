"""Virtual staining: pix2pix training, bundle contract, mask gating, trust, live stage."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from typer.testing import CliRunner

from smartscope.engines import Engine, load_bundle
from smartscope.engines.bundle import BundleError, write_bundle
from smartscope.engines.networks.stain import StainGenerator, StainNetConfig, input_channel_names
from smartscope.frame import Frame
from smartscope.models import BUNDLES_DIR
from smartscope.models.stain.data import from_tiff_dir, simulate
from smartscope.models.stain.predict import (
    build_input,
    input_stats,
    label_free_normalized,
    predict,
    trust_values,
)
from smartscope.models.stain.stage import StainStage, StainStageConfig
from smartscope.storage import RunFolder

SHIPPED = BUNDLES_DIR / "stain-pix2pix-small"
CHANNELS = ["nuclei", "mitochondria", "membrane"]
TINY = [
    "--steps", "6", "--val-every", "3", "--patch-px", "32", "--depth", "2", "--base-width", "4",
    "--batch-size", "2", "--tile-px", "64", "--overlap-px", "8", "--threads", "1", "--quiet",
]  # fmt: skip


@pytest.fixture(scope="module")
def tiny_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from smartscope.cli import app

    out = tmp_path_factory.mktemp("stain") / "tiny"
    res = CliRunner().invoke(
        app, ["train", "stain", "--simulate", "--n-fields", "5", "--field-px", "64", "-o", str(out), *TINY]
    )
    assert res.exit_code == 0, res.output
    return out


def test_trained_bundle_is_a_generator_with_fixed_per_channel_normalization(tiny_bundle: Path) -> None:
    b = load_bundle(tiny_bundle)
    m = b.manifest
    assert m.task == "stain"
    assert m.inputs[0].channels == input_channel_names(CHANNELS, completion=True)
    assert m.outputs[0].channels == CHANNELS
    norm = m.normalization
    assert (
        norm.kind == "affine" and norm.channel_offset_adu is not None and norm.channel_scale_adu is not None
    )
    # label-free and fluorescence maps come from the training data; masks pass through
    assert norm.channel_offset_adu[0] > 50 and norm.channel_scale_adu[0] > 10
    assert norm.channel_offset_adu[4:] == [0.0] * 3 and norm.channel_scale_adu[4:] == [1.0] * 3
    assert "train stain" in m.provenance.command and m.provenance.method == "pix2pix"
    assert set(m.provenance.train_fovs).isdisjoint(m.provenance.heldout_fovs)
    for c in CHANNELS:
        for k in ("pearson", "ssim", "psnr_db", "mae", "completion_pearson"):
            assert np.isfinite(m.metrics[f"{k}:{c}"])
        assert m.calibration[f"target_scale:{c}"] > 0
    assert m.calibration["disagreement_median"] > 0
    # only the generator is exported: every weight belongs to the generator
    from smartscope.engines.weights import state_from_npz_bytes

    assert b.weights_bytes is not None
    keys = set(state_from_npz_bytes(b.weights_bytes, source="test"))
    gen = StainGenerator(StainNetConfig(**m.architecture.params))  # type: ignore[union-attr]
    assert keys == set(gen.state_dict())


def test_onnx_and_torch_backends_agree(tiny_bundle: Path) -> None:
    lf = simulate(1, 64, seed=5).label_free[0][0]
    ort = predict(Engine.open(tiny_bundle, "onnxruntime"), lf, None, 1).virtual
    ref = predict(Engine.open(tiny_bundle, "torch", device="cpu"), lf, None, 1).virtual
    assert ort.shape == (3, 64, 64)
    assert np.abs(ort - ref).max() <= 1e-4 * max(1.0, float(np.abs(ref).max()))


def test_missing_channels_are_ignored_by_the_mask_gate() -> None:
    torch.manual_seed(0)
    gen = StainGenerator(StainNetConfig(channels=CHANNELS, depth=2, base_width=4)).eval()
    x = torch.randn(1, 7, 32, 32)
    x[:, 4:] = 0.0
    x[:, 4] = 1.0  # nuclei given; mitochondria and membrane missing
    y = gen(x)
    x2 = x.clone()
    x2[:, 2:4] = torch.randn(1, 2, 32, 32) * 100  # garbage in the missing channels
    assert torch.allclose(gen(x2), y)
    x3 = x.clone()
    x3[:, 1] += 1.0  # the given channel does matter
    assert not torch.allclose(gen(x3), y)


def test_build_input_sets_masks_and_rejects_unknown_channels(tiny_bundle: Path) -> None:
    eng = Engine.open(tiny_bundle, "onnxruntime")
    lf = np.full((16, 16), 500, np.float32)
    x = build_input(eng, lf, {"mitochondria": np.full((16, 16), 7, np.float32)})
    assert x.shape == (7, 16, 16)
    assert (x[2] == 7).all() and (x[5] == 1).all() and (x[4] == 0).all() and (x[6] == 0).all()
    off, scale = eng.normalization_params(x)
    assert np.shape(off) == (7, 1, 1) and np.shape(scale) == (7, 1, 1)
    with pytest.raises(ValueError, match="tubulin"):
        build_input(eng, lf, {"tubulin": lf})
    with pytest.raises(ValueError, match="shape"):
        build_input(eng, lf, {"nuclei": np.zeros((8, 8), np.float32)})


def test_per_channel_normalization_must_match_the_inputs(tiny_bundle: Path, tmp_path: Path) -> None:
    b = load_bundle(tiny_bundle)
    fields = b.manifest.model_dump()
    fields["normalization"]["channel_offset_adu"] = [0.0, 0.0]
    fields["normalization"]["channel_scale_adu"] = [1.0, 1.0]
    with pytest.raises((BundleError, ValueError), match="2 channel maps for 7 input channels"):
        write_bundle(tmp_path / "bad", fields, b.onnx_bytes, b.weights_bytes)


def test_training_from_tiff_folders(tmp_path: Path) -> None:
    from smartscope.cli import app

    data = simulate(3, 64, seed=9)
    for sub in ("label_free", *CHANNELS):
        (tmp_path / "d" / sub).mkdir(parents=True)
    for i in range(3):
        tifffile.imwrite(tmp_path / "d" / "label_free" / f"fov{i}.tif", data.label_free[i].astype(np.uint16))
        for k, c in enumerate(CHANNELS):
            tifffile.imwrite(tmp_path / "d" / c / f"fov{i}.tif", data.given[i][:, k].astype(np.uint16))
    loaded = from_tiff_dir(tmp_path / "d", CHANNELS)
    assert loaded.names == ["fov0", "fov1", "fov2"] and loaded.given[0].shape == (1, 3, 64, 64)
    out = tmp_path / "b"
    res = CliRunner().invoke(
        app,
        [
            "train",
            "stain",
            "--data",
            str(tmp_path / "d"),
            "--channels",
            ",".join(CHANNELS),
            "-o",
            str(out),
            *TINY,
        ],
    )
    assert res.exit_code == 0, res.output
    assert load_bundle(out).manifest.provenance.heldout_fovs[0].startswith("fov")
    (tmp_path / "d" / "membrane" / "fov1.tif").unlink()
    with pytest.raises(ValueError, match=r"membrane.*fov1.tif: missing"):
        from_tiff_dir(tmp_path / "d", CHANNELS)


def test_stage_keeps_given_channels_for_completion_and_drops_stale_ones(tiny_bundle: Path) -> None:
    stage = StainStage(
        StainStageConfig(
            bundle=tiny_bundle,
            label_free_channel="LF",
            given={"nuclei": "488"},
            max_given_age_frames=2,
            tta=2,
        )
    )
    f = simulate(1, 64, seed=3)
    lf, nuc = f.label_free[0][0].astype(np.uint16), f.given[0][0, 0].astype(np.uint16)
    assert stage.process(Frame(0, nuc, 0.0, channel="488"), {}).values == {}
    out = stage.process(Frame(1, lf, 0.1, channel="LF"), {})
    assert out.values["given_channels"] == 1
    assert out.images["channels"].shape == (4, 64, 64)
    assert out.channel_names["channels"] == [
        "label_free_adu",
        "virtual_nuclei",
        "virtual_mitochondria",
        "virtual_membrane",
    ]
    assert out.images["disagreement"].shape == (3, 64, 64)
    assert stage.process(Frame(9, lf, 0.9, channel="LF"), {}).values["given_channels"] == 0  # too old
    with pytest.raises(ValueError, match="given"):
        StainStage(StainStageConfig(bundle=tiny_bundle, given={"actin": "561"}))


def test_multichannel_outputs_stay_in_one_named_ome_stack(tmp_path: Path) -> None:
    run = RunFolder(tmp_path, "t")
    names = ["label_free_adu", "virtual_nuclei"]
    for i in range(3):
        run.write_output("stain", "channels", i, np.full((2, 8, 8), i, np.float32), float(i), names)
    run.close()
    files = sorted((run.path / "outputs").glob("*.tif"))
    assert [p.name for p in files] == ["stain.channels.ome.tif"]
    with tifffile.TiffFile(files[0]) as tif:
        assert len(tif.pages) == 6
    xml = str(tifffile.tiffcomment(files[0]))
    assert 'SizeC="2"' in xml and 'SizeT="3"' in xml and 'Name="virtual_nuclei"' in xml


# ----------------------------------------------------------------- shipped bundle

shipped = pytest.mark.skipif(not SHIPPED.exists(), reason="shipped stain bundle not built")


@shipped
def test_shipped_bundle_predicts_nuclei_and_flags_shifted_inputs() -> None:
    eng = Engine.open(SHIPPED, "onnxruntime")
    cal = eng.manifest.calibration
    assert eng.manifest.metrics["pearson:nuclei"] > 0.8  # measured on held-out fields at training

    def trust(mode: str = "phase", defocus_um: float = 0.0) -> dict[str, float]:
        d = simulate(2, 128, seed=4242, mode=mode, defocus_um=defocus_um)
        vals = []
        for a in d.label_free:
            pred = predict(eng, a[0], None, 4)
            vals.append(trust_values(pred, input_stats(label_free_normalized(eng, a[0])), cal))
        return {k: float(np.mean([v[k] for v in vals])) for k in vals[0]}

    ok, bright, defocused = trust(), trust(mode="brightfield"), trust(defocus_um=2.0)
    assert ok["input_shift"] < 4 and ok["disagreement_ratio"] < 2
    assert bright["input_shift"] > 4
    assert defocused["disagreement_ratio"] > ok["disagreement_ratio"]


@shipped
def test_live_staining_on_the_virtual_microscope(tmp_path: Path) -> None:
    from smartscope.config import StainScenario
    from smartscope.scenarios import stain

    run = stain.run(StainScenario(n_frames=8, defocus_frames=(3, 6), interval_ms=150.0), tmp_path)
    rd = Path(run.run_dir)
    assert run.frames_stored == 8
    with tifffile.TiffFile(rd / "raw.ome.tif") as tif:
        assert len(tif.pages) == 8
    with tifffile.TiffFile(rd / "outputs" / "stain.channels.ome.tif") as tif:
        assert len(tif.pages) == 4 * len(run.frames)
    xml = str(tifffile.tiffcomment(rd / "outputs" / "stain.channels.ome.tif"))
    for name in ("label_free_adu", "virtual_nuclei", "virtual_mitochondria", "virtual_membrane"):
        assert f'Name="{name}"' in xml
    # label-free only: no laser light reached the sample
    assert run.dose_mj["488"] == run.dose_mj["561"] == run.dose_mj["640"] == 0.0 and run.dose_mj["lamp"] > 0
    in_focus = [r for r in run.frames if r["z_um"] == 0.0]
    assert in_focus and min(r["pearson:nuclei"] for r in in_focus) > 0.7
    actions = [json.loads(line) for line in (rd / "actions.jsonl").read_text().splitlines()]
    assert any(a["request"]["source"] == "user" and a["applied"]["kind"] == "z" for a in actions)
    assert stain.score(run)["in_focus"]["frames"] == len(in_focus)


def test_simulated_pairs_follow_focus_but_targets_stay_in_focus() -> None:
    from smartscope.simulators.datasets import stain_fields

    sharp = stain_fields(1, 128, seed=2)
    blurred = stain_fields(1, 128, seed=2, defocus_um=2.0)
    np.testing.assert_array_equal(sharp.target, blurred.target)
    # defocus lowers the label-free image's fine detail
    detail_sharp = input_stats(sharp.label_free_adu[0] / 500.0)["detail"]
    detail_blur = input_stats(blurred.label_free_adu[0] / 500.0)["detail"]
    assert detail_blur < 0.8 * detail_sharp
    # a fluorescence frame holds only its own structure: brightest where the target is
    for k in range(3):
        top = sharp.target[0, k] > np.percentile(sharp.target[0, k], 95)
        assert sharp.fluorescence_adu[0, k][top].mean() > 1.5 * sharp.fluorescence_adu[0, k][~top].mean()


@pytest.fixture(scope="module")
def planes_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from smartscope.cli import app

    out = tmp_path_factory.mktemp("stain") / "planes"
    args = [
        "train",
        "stain",
        "--simulate",
        "--planes=-1,1",
        "--n-fields",
        "4",
        "--field-px",
        "64",
        "-o",
        str(out),
    ]
    res = CliRunner().invoke(app, [*args, *TINY])
    assert res.exit_code == 0, res.output
    return out


def test_simulator_records_the_label_free_planes() -> None:
    data = simulate(2, 64, 3, planes_um=(-1.0, 1.0))
    assert data.planes is not None and data.planes[0].shape == (1, 2, 64, 64)
    stack = data.label_free_stack(1)
    assert stack.shape == (1, 3, 64, 64)
    np.testing.assert_array_equal(stack[0, 0], data.label_free[1][0])
    # the planes are the same cells out of focus: alike, not identical, and not the focus frame
    r = np.corrcoef(stack[0, 0].ravel(), stack[0, 1].ravel())[0, 1]
    assert 0.5 < r < 0.999
    assert "label-free planes [-1.0, 1.0] um" in data.description


def test_planes_bundle_takes_a_stack_and_gates_completion_after_the_planes(planes_bundle: Path) -> None:
    m = load_bundle(planes_bundle).manifest
    assert m.inputs[0].channels[:3] == ["label_free", "label_free@-1um", "label_free@+1um"]
    assert m.inputs[0].channels == input_channel_names(CHANNELS, True, (-1.0, 1.0))
    norm = m.normalization
    assert norm.channel_offset_adu is not None and len(set(norm.channel_offset_adu[:3])) == 1
    eng = Engine.open(planes_bundle, "onnxruntime")
    stack = simulate(1, 64, 7, planes_um=(-1.0, 1.0)).label_free_stack(0)[0]
    x = build_input(eng, stack, {"mitochondria": np.full((64, 64), 5, np.float32)})
    np.testing.assert_array_equal(x[:3], stack)
    assert x[3 + 1, 0, 0] == 5 and x[3 + 3 + 1].min() == 1 and x[3 + 3].max() == 0
    pred = predict(eng, stack, None, 2)
    assert pred.virtual.shape == (3, 64, 64) and pred.disagreement is not None
    with pytest.raises(ValueError, match=r"\(3, Y, X\)"):
        build_input(eng, stack[0], None)
    # the torch backend rebuilds the same generator from the architecture block
    pt = Engine.open(planes_bundle, "torch")
    np.testing.assert_allclose(pt.infer(x)["virtual"], eng.infer(x)["virtual"], rtol=1e-4, atol=1e-4)
    # the live stage says plainly that it cannot feed the planes
    with pytest.raises(ValueError, match="label-free planes"):
        StainStage(StainStageConfig(bundle=planes_bundle))


def test_planes_generator_ignores_what_is_in_a_missing_channel() -> None:
    cfg = StainNetConfig(channels=CHANNELS, planes_um=[-1.0, 1.0], depth=1, base_width=4)
    gen = StainGenerator(cfg).eval()
    x = torch.randn(1, cfg.in_channels, 16, 16)
    x[:, 3 + 3 :] = 0  # no channel given
    y = x.clone()
    y[:, 3:6] = torch.randn(1, 3, 16, 16) * 100  # junk in the fluorescence inputs
    torch.testing.assert_close(gen(x), gen(y))
