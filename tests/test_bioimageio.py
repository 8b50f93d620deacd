"""bioimage.io: shipped bundles export to packages that pass ``bioimageio test``; packages
(CAREamics' layout, and Zoo-shaped ones with the Zoo's pre- and postprocessing) import to
verified bundles that reproduce their test outputs and run in the loop. No network anywhere."""

from __future__ import annotations

import socket
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tifffile
import yaml
from typer.testing import CliRunner

pytest.importorskip("bioimageio.core")

from smartscope.cli import app
from smartscope.config import validate_config
from smartscope.engines.runtime import Engine
from smartscope.models import shipped_bundle
from smartscope.runner import run
from tests.zoo_packages import VARIANTS

runner = CliRunner()


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[object]]:
    """Every attempt to open a network connection fails and is recorded."""
    attempts: list[object] = []

    def refuse(self: socket.socket, address: object, *args: object) -> None:
        attempts.append(address)
        raise OSError(f"network disabled in this test: {address}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    yield attempts
    assert attempts == [], f"tried to reach the network: {attempts}"


def test_export_shipped_n2v_passes_bioimageio_test_offline(tmp_path: Path, no_network: list[object]) -> None:
    from bioimageio.core import load_model_description, predict, test_model

    pkg = tmp_path / "n2v.zip"
    res = runner.invoke(
        app, ["export", str(shipped_bundle("denoise-n2v-lowlight")), "--bioimageio", "--out", str(pkg)]
    )
    assert res.exit_code == 0, res.output
    assert "bioimageio test passed" in res.output
    summary = test_model(pkg)  # bioimageio.core's own test, again, on the written zip
    assert summary.status == "passed", summary.format()

    with zipfile.ZipFile(pkg) as zf:
        names = set(zf.namelist())
        rdf = yaml.safe_load(zf.read("rdf.yaml"))
    assert {"rdf.yaml", "model.onnx", "engine.json", "README.md", "test_input.npy"} <= names
    assert rdf["type"] == "model" and rdf["format_version"].startswith("0.5")
    assert rdf["license"] == "BSD-3-Clause" and rdf["authors"] and rdf["cite"]
    with zipfile.ZipFile(pkg) as zf:  # no path of the machine that trained or exported it
        for name in zf.namelist():
            data = zf.read(name)
            assert b"/tmp/" not in data and b"/work/" not in data and b"/home/" not in data, name
    assert set(rdf["weights"]) == {"onnx"}
    cmd = rdf["config"]["smartscope"]["training_command"]
    assert cmd.startswith("python -m smartscope.models.cli denoise --method n2v")
    (inp,) = rdf["inputs"]
    assert [a["id"] if "id" in a else a["type"] for a in inp["axes"]] == ["batch", "channel", "y", "x"]
    assert inp["axes"][2]["scale"] == pytest.approx(0.1) and inp["axes"][2]["unit"] == "micrometer"
    assert [p["id"] for p in inp["preprocessing"]][:2] == ["ensure_dtype", "scale_range"]
    assert inp["preprocessing"][1]["kwargs"]["max_percentile"] == pytest.approx(99.8)

    # bioimageio.core's prediction of a fresh frame = smartscope's engine, in normalized units
    from smartscope.models.denoise.data import simulate

    frame = simulate("fixed20", n_fields=1, field_px=96, seed=77).noisy[0][0]
    descr = load_model_description(pkg)
    got = predict(model=descr, inputs=frame[None, None].astype(np.float32))
    theirs = next(iter(got.members.values())).data.values[0, 0]
    engine = Engine.open(shipped_bundle("denoise-n2v-lowlight"), "onnxruntime")
    ours_adu = engine.infer(frame)["denoised"][0]
    lo, hi = np.percentile(frame, [1.0, 99.8])
    ours = (ours_adu - lo) / (hi - lo)
    assert np.abs(ours - theirs).max() < 1e-4

    # and the package imports back into an equivalent bundle
    back = tmp_path / "back"
    res = runner.invoke(app, ["engines", "import", str(pkg), "--out", str(back)])
    assert res.exit_code == 0, res.output
    again = Engine.open(back, "onnxruntime").infer(frame)["denoised"][0]
    assert np.abs(again - theirs).max() < 1e-4


def test_careamics_layout_imports_and_runs_in_the_loop(tmp_path: Path, no_network: list[object]) -> None:
    """A Noise2Void package in CAREamics' export layout (TorchScript weights, fixed-size axes,
    per-channel mean/std normalization and its inverse) becomes a bundle whose loop output
    equals CAREamics' own prediction arithmetic within 1e-3 ADU."""
    from bioimageio.core import test_model

    from smartscope.models.denoise.data import simulate
    from tests.careamics_package import build, careamics_predict

    pkg, model = build(tmp_path / "n2v-careamics.zip", px=128, steps=15)
    assert test_model(pkg).status == "passed"
    bundle = tmp_path / "imported"
    res = runner.invoke(app, ["engines", "import", str(pkg), "--out", str(bundle)])
    assert res.exit_code == 0, res.output
    assert "torchscript weights" in res.output

    frames = np.stack(simulate("fixed20", n_fields=3, field_px=128, seed=5).noisy)[:, 0]
    stack = tmp_path / "stack.tif"
    tifffile.imwrite(stack, np.clip(np.round(frames), 0, 65535).astype(np.uint16), photometric="minisblack")
    cfg = validate_config(
        {
            "microscope": {"driver": "replay", "replay_path": str(stack), "replay_fps": 50},
            "acquisition": {"n_frames": None},
            "pipeline": {"stages": [{"kind": "engine", "name": "n2v", "bundle": str(bundle)}]},
            "storage": {"root": str(tmp_path / "runs"), "name": "careamics"},
        }
    )
    result = run(cfg, report=False)
    assert result.status == "completed" and result.metrics["frames_analysed"] >= 1
    outs = tifffile.imread(Path(result.run_dir) / "outputs" / "n2v.prediction.ome.tif").reshape(-1, 128, 128)
    raw = tifffile.imread(stack)
    from smartscope.storage import read_jsonl

    analysed = [r["index"] for r in read_jsonl(Path(result.run_dir) / "analysis.jsonl") if r.get("values")]
    assert len(analysed) == len(outs)
    for k, idx in enumerate(analysed):
        ref = careamics_predict(model, raw[idx].astype(np.float32))
        assert np.abs(outs[k] - ref).max() < 1e-3


def test_export_names_authors_with_their_github_users(tmp_path: Path, no_network: list[object]) -> None:
    """``--author NAME --github-user ID`` (the Model Zoo asks for a GitHub user); offline:
    the user names are not looked up."""
    pkg = tmp_path / "n2v.zip"
    bundle = str(shipped_bundle("denoise-n2v-lowlight"))
    args = ["export", bundle, "--bioimageio", "--out", str(pkg), "--author", "Ada Lovelace"]
    res = runner.invoke(app, [*args, "--github-user", "ada", "--github-user", "two"])
    assert res.exit_code == 1 and "--github-user: 2 given for 1 --author" in res.output
    res = runner.invoke(app, [*args, "--github-user", "ada", "--author", "Second Author"])
    assert res.exit_code == 0, res.output
    rdf = yaml.safe_load(zipfile.ZipFile(pkg).read("rdf.yaml"))
    assert [(a["name"], a.get("github_user")) for a in rdf["authors"]] == [
        ("Ada Lovelace", "ada"),
        ("Second Author", None),
    ]


def test_import_refuses_what_engine_json_cannot_express(tmp_path: Path) -> None:
    folder = tmp_path / "pkg"
    from smartscope.engines.bioimageio_export import export_bioimageio
    from smartscope.engines.bundle import load_bundle
    from smartscope.models import heldout_input

    bundle = shipped_bundle("denoise-n2v-lowlight")
    field = heldout_input(load_bundle(bundle).manifest)
    assert field is not None
    export_bioimageio(bundle, folder, test_input=field, test=False)
    rdf_path = folder / "rdf.yaml"
    rdf = yaml.safe_load(rdf_path.read_text())
    rdf["inputs"][0]["preprocessing"][1] = {"id": "softmax", "kwargs": {"axis": "channel"}}
    rdf_path.write_text(yaml.safe_dump(rdf))
    res = runner.invoke(app, ["engines", "import", str(rdf_path), "--out", str(tmp_path / "b")])
    assert res.exit_code == 1
    line = " ".join(res.output.split())
    assert "inputs[0].preprocessing[1]: 'softmax' has no engine.json equivalent (engine.json takes" in line
    assert "Traceback" not in res.output and not (tmp_path / "b").exists()


def test_export_without_heldout_data_asks_for_a_test_input(tmp_path: Path) -> None:
    res = runner.invoke(
        app,
        ["export", str(shipped_bundle("stain-l1-small")), "--bioimageio", "--out", str(tmp_path / "s.zip")],
    )
    assert res.exit_code == 1
    assert "pass --test-input" in " ".join(res.output.split())
    # a single-channel test input for a 7-channel engine: the error says what it takes, once
    np.save(tmp_path / "one.npy", np.zeros((64, 64), np.float32))
    args = ["export", str(shipped_bundle("stain-l1-small")), "--bioimageio", "--out", str(tmp_path / "s.zip")]
    res = runner.invoke(app, [*args, "--test-input", str(tmp_path / "one.npy")])
    line = " ".join(res.output.split())
    assert res.exit_code == 1 and "has shape (64, 64); engine 'stain-l1-small' takes (7, H, W)" in line
    assert "(H, W) or" not in line


@pytest.fixture(scope="module")
def zoo(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, np.ndarray, np.ndarray]]:
    """Every Zoo-shaped package (tests/zoo_packages.py), built once."""
    from tests.zoo_packages import build

    root = tmp_path_factory.mktemp("zoo")
    return {v: build(v, root / f"{k}.zip") for k, v in enumerate(VARIANTS)}


@pytest.mark.parametrize("variant", VARIANTS)
def test_zoo_packages_import_and_reproduce_their_test_outputs(
    zoo: dict[str, tuple[Path, np.ndarray, np.ndarray]],
    tmp_path: Path,
    variant: str,
    no_network: list[object],
) -> None:
    """Packages built with bioimageio.spec's own API, whose test outputs bioimageio.core
    computed, import into bundles that reproduce them (the Zoo's tolerance, 1e-3)."""
    import json

    from bioimageio.core import test_model

    pkg, x, y = zoo[variant]
    assert test_model(pkg).status == "passed"  # a valid package, by bioimageio.core's own test
    out = tmp_path / "bundle"
    res = runner.invoke(app, ["engines", "import", str(pkg), "--out", str(out)])
    assert res.exit_code == 0, res.output
    manifest = json.loads((out / "engine.json").read_text())
    declared = yaml.safe_load(zipfile.ZipFile(pkg).read("rdf.yaml"))
    pre = [p["id"] for p in declared["inputs"][0]["preprocessing"] if p["id"] != "ensure_dtype"]
    assert [p["id"] for p in manifest["preprocessing"]] == pre  # the same operations, in order
    post = [p["id"] for p in declared["outputs"][0]["postprocessing"] if p["id"] != "ensure_dtype"]
    assert [p["id"] for p in manifest["outputs"][0]["postprocessing"]] == post
    got = Engine.open(out, "onnxruntime").infer(x[0])["prediction"]
    np.testing.assert_allclose(got, y[0], rtol=1e-3, atol=1e-3)


def test_per_dataset_statistics_follow_bioimageio_core_over_several_frames(
    zoo: dict[str, tuple[Path, np.ndarray, np.ndarray]], tmp_path: Path
) -> None:
    """Per-dataset zero_mean_unit_variance: the statistics of every frame so far, as
    bioimageio.core's prediction pipeline keeps them without initial dataset statistics."""
    from bioimageio.core import Sample, Tensor, create_prediction_pipeline, load_model_description

    pkg, x, _y = zoo["per-dataset zero_mean_unit_variance"]
    out = tmp_path / "bundle"
    assert runner.invoke(app, ["engines", "import", str(pkg), "--out", str(out)]).exit_code == 0
    rng = np.random.default_rng(3)
    frames = [x[0] * s + rng.normal(0, 5, x[0].shape).astype(np.float32) for s in (1.0, 0.5, 2.0)]
    engine = Engine.open(out, "onnxruntime")
    pipeline = create_prediction_pipeline(load_model_description(pkg))
    for k, f in enumerate(frames):
        sample = Sample(
            members={"raw": Tensor.from_numpy(f[None], dims=("batch", "channel", "y", "x"))}, stat={}, id=k
        )
        theirs = pipeline.predict_sample_without_blocking(sample).members["prediction"].data.values[0]
        ours = engine.infer(f)["prediction"]
        np.testing.assert_allclose(ours, theirs, rtol=1e-3, atol=1e-3)
    fresh = Engine.open(out, "onnxruntime").infer(frames[2])["prediction"]
    assert np.abs(engine.infer(frames[2])["prediction"] - fresh).max() > 1e-3  # four frames' statistics
    engine.reset()  # a new data set: the statistics start again
    np.testing.assert_allclose(engine.infer(frames[2])["prediction"], fresh, atol=1e-6)


def test_preprocessing_is_the_same_for_every_backend(tmp_path: Path) -> None:
    """A bundle with bioimage.io preprocessing (per-sample zero_mean_unit_variance) and a
    sigmoid on its output gives the same result on ONNX Runtime and on torch: the runtime
    applies the operations on the host for every backend (TensorRT takes the same path)."""
    import json

    from smartscope.engines.bundle import load_bundle, write_bundle

    pytest.importorskip("torch")
    src = load_bundle(shipped_bundle("denoise-n2v-lowlight"))
    fields = json.loads(src.manifest.model_dump_json())
    del fields["normalization"]
    fields["preprocessing"] = [{"id": "zero_mean_unit_variance", "axes": ["channel", "y", "x"]}]
    fields["outputs"][0].update(denormalize=False, postprocessing=[{"id": "sigmoid"}])
    out = write_bundle(tmp_path / "zmuv", fields, src.onnx_bytes, src.weights_bytes)
    frame = np.random.default_rng(1).poisson(150, (300, 280)).astype(np.uint16)  # tiled: 2 x 2
    results = {b: Engine.open(out, b).infer(frame)["denoised"] for b in ("onnxruntime", "torch")}
    np.testing.assert_allclose(results["torch"], results["onnxruntime"], atol=1e-4)
    assert results["onnxruntime"].min() >= 0 and results["onnxruntime"].max() <= 1  # the sigmoid
    # the statistics are the whole frame's, never a tile's
    from smartscope.engines.processing import Processor

    x = frame.astype(np.float64)
    z = (x - x.mean()) / (x.std() + 1e-6)
    np.testing.assert_allclose(
        Processor(load_bundle(out).manifest.preprocessing or [])(frame[None])[0], z, atol=1e-5
    )


@pytest.mark.parametrize("variant", ["scale_linear per channel and clip", "sigmoid and binarize"])
def test_bundles_with_zoo_processing_export_back(
    zoo: dict[str, tuple[Path, np.ndarray, np.ndarray]],
    tmp_path: Path,
    variant: str,
    no_network: list[object],
) -> None:
    """engine.json's bioimage.io operations go back into a package that passes bioimageio
    test, declaring the same operations."""
    pkg, x, _y = zoo[variant]
    bundle = tmp_path / "bundle"
    assert runner.invoke(app, ["engines", "import", str(pkg), "--out", str(bundle)]).exit_code == 0
    np.save(tmp_path / "x.npy", x[0])
    back = tmp_path / "back.zip"
    res = runner.invoke(
        app,
        ["export", str(bundle), "--bioimageio", "--out", str(back), "--test-input", str(tmp_path / "x.npy")],
    )
    assert res.exit_code == 0, res.output
    theirs = yaml.safe_load(zipfile.ZipFile(pkg).read("rdf.yaml"))
    ours = yaml.safe_load(zipfile.ZipFile(back).read("rdf.yaml"))
    for key, where in (("preprocessing", "inputs"), ("postprocessing", "outputs")):
        want = [p for p in theirs[where][0][key] if p["id"] != "ensure_dtype"]
        got = [p for p in ours[where][0][key] if p["id"] != "ensure_dtype"]
        assert [p["id"] for p in got] == [p["id"] for p in want]
        for p, g in zip(want, got, strict=True):  # what the Zoo's package gave, the same (defaults added)
            assert p.get("kwargs", {}).items() <= g.get("kwargs", {}).items()
