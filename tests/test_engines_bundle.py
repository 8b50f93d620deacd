"""Bundle loading: validation, tamper detection, folder and zip, no pickle."""

from __future__ import annotations

import io
import json
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest

from smartscope.engines import BundleError, load_bundle
from smartscope.engines.bundle import find_bundles, sha256_bytes
from smartscope.engines.testing import make_test_bundle


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_test_bundle(tmp_path_factory.mktemp("b") / "random", seed=3)


def _copy(src: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "copy"
    shutil.copytree(src, dst)
    return dst


def test_roundtrip_folder_and_zip(bundle_dir: Path, tmp_path: Path) -> None:
    b = load_bundle(bundle_dir)
    assert b.manifest.task == "denoise"
    assert b.manifest.onnx_sha256 == sha256_bytes((bundle_dir / "model.onnx").read_bytes())
    assert b.manifest.architecture is not None and b.weights_bytes is not None
    # zip with members nested under one folder, as `zip -r` makes them
    zpath = tmp_path / "bundle.zip"
    with zipfile.ZipFile(zpath, "w") as zf:
        for f in bundle_dir.iterdir():
            zf.write(f, f"random/{f.name}")
    bz = load_bundle(zpath)
    assert bz.manifest == b.manifest and bz.onnx_bytes == b.onnx_bytes
    assert find_bundles(tmp_path) == [zpath]


def test_tampered_onnx_is_refused(bundle_dir: Path, tmp_path: Path) -> None:
    d = _copy(bundle_dir, tmp_path)
    data = bytearray((d / "model.onnx").read_bytes())
    data[-10] ^= 0xFF  # flip bits inside the weights of the graph
    (d / "model.onnx").write_bytes(bytes(data))
    with pytest.raises(BundleError, match=r"model\.onnx: sha256 .* does not match"):
        load_bundle(d)


def test_tampered_weights_are_refused(bundle_dir: Path, tmp_path: Path) -> None:
    d = _copy(bundle_dir, tmp_path)
    with np.load(d / "weights.npz", allow_pickle=False) as npz:
        arrays = {k: np.array(npz[k]) for k in npz.files}
    first = next(iter(arrays))
    arrays[first] = arrays[first] + 1.0
    np.savez(d / "weights.npz", **arrays)
    with pytest.raises(BundleError, match=r"weights\.npz: sha256 .* does not match .*weights_sha256"):
        load_bundle(d)


def test_missing_file_is_named(bundle_dir: Path, tmp_path: Path) -> None:
    d = _copy(bundle_dir, tmp_path)
    (d / "model.onnx").unlink()
    with pytest.raises(BundleError, match=r"model\.onnx: missing file"):
        load_bundle(d)
    (d / "engine.json").unlink()
    with pytest.raises(BundleError, match=r"engine\.json: missing file"):
        load_bundle(d)
    with pytest.raises(BundleError, match="not found"):
        load_bundle(tmp_path / "nope")


@pytest.mark.parametrize(
    ("edit", "field"),
    [
        (lambda m: m.pop("task"), "task"),
        (lambda m: m.update(tile={"size_px": 64, "overlap_px": 40, "multiple_px": 4}), "tile"),
        (lambda m: m.update(surprise=1), "surprise"),
        (lambda m: m["outputs"][0].update(dtype="float64"), "outputs.0.dtype"),
        (lambda m: m.update(onnx_sha256="xyz"), "onnx_sha256"),
        (lambda m: m.update(onnx_file="../model.onnx"), "plain names"),
    ],
)
def test_wrong_schema_names_the_field(bundle_dir: Path, tmp_path: Path, edit, field: str) -> None:
    d = _copy(bundle_dir, tmp_path)
    man = json.loads((d / "engine.json").read_text())
    edit(man)
    (d / "engine.json").write_text(json.dumps(man))
    with pytest.raises(BundleError) as info:
        load_bundle(d)
    msg = str(info.value)
    assert "engine.json" in msg and field in msg


def test_declared_tensors_must_match_the_graph(bundle_dir: Path, tmp_path: Path) -> None:
    d = _copy(bundle_dir, tmp_path)
    man = json.loads((d / "engine.json").read_text())
    man["outputs"][0]["name"] = "restored"
    (d / "engine.json").write_text(json.dumps(man))
    with pytest.raises(BundleError, match=r"graph outputs \['denoised'\] do not match"):
        load_bundle(d)
    man["outputs"][0]["name"] = "denoised"
    man["inputs"][0]["channels"] = ["a", "b"]
    (d / "engine.json").write_text(json.dumps(man))
    with pytest.raises(BundleError, match=r"1 channels in the graph, engine.json declares 2"):
        load_bundle(d)


def test_pickled_weights_are_refused(bundle_dir: Path, tmp_path: Path) -> None:
    """weights.npz holding an object array (pickle) fails even with a matching sha256."""
    d = _copy(bundle_dir, tmp_path)
    buf = io.BytesIO()
    np.savez(buf, evil=np.array([{"a": 1}], dtype=object))
    payload = buf.getvalue()
    (d / "weights.npz").write_bytes(payload)
    man = json.loads((d / "engine.json").read_text())
    man["architecture"]["weights_sha256"] = sha256_bytes(payload)
    (d / "engine.json").write_text(json.dumps(man))
    with pytest.raises(BundleError, match=r"weights\.npz: not a plain numeric \.npz"):
        load_bundle(d)


def test_not_a_bundle(tmp_path: Path) -> None:
    f = tmp_path / "x.zip"
    f.write_text("hello")
    with pytest.raises(BundleError, match="not a bundle folder or zip"):
        load_bundle(f)
    d = tmp_path / "d"
    d.mkdir()
    (d / "engine.json").write_text("{not json")
    with pytest.raises(BundleError, match=r"engine\.json: not valid JSON"):
        load_bundle(d)
