"""bioimage.io: shipped bundles export to packages that pass ``bioimageio test``; packages
(CAREamics' layout) import to verified bundles that run in the loop. No network anywhere."""

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


def test_import_refuses_what_engine_json_cannot_express(tmp_path: Path) -> None:
    folder = tmp_path / "pkg"
    from smartscope.engines.bioimageio_export import export_bioimageio

    export_bioimageio(shipped_bundle("denoise-n2v-lowlight"), folder, test=False)
    rdf_path = folder / "rdf.yaml"
    rdf = yaml.safe_load(rdf_path.read_text())
    rdf["inputs"][0]["preprocessing"][1] = {
        "id": "zero_mean_unit_variance",
        "kwargs": {"axes": ["channel", "y", "x"]},
    }
    rdf_path.write_text(yaml.safe_dump(rdf))
    res = runner.invoke(app, ["engines", "import", str(rdf_path), "--out", str(tmp_path / "b")])
    assert res.exit_code == 1
    line = " ".join(res.output.split())
    assert "inputs[0].preprocessing[1]: 'zero_mean_unit_variance' has no engine.json equivalent" in line
    assert "Traceback" not in res.output and not (tmp_path / "b").exists()


def test_export_without_heldout_data_asks_for_a_test_input(tmp_path: Path) -> None:
    res = runner.invoke(
        app,
        ["export", str(shipped_bundle("stain-l1-small")), "--bioimageio", "--out", str(tmp_path / "s.zip")],
    )
    assert res.exit_code == 1
    assert "pass --test-input" in " ".join(res.output.split())
