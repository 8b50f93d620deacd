"""torch module / training checkpoint -> verified engine bundle.

ONNX export uses torch's TorchScript-based exporter (``dynamo=False``): it is present in
torch 2.13, needs no extra package (the dynamo exporter would need ``onnxscript``), and
exports the U-Net with dynamic N, H and W axes at opset 17. The exported graph is checked
against the FP32 torch module on a fresh random input before the bundle is written.

A training checkpoint is a folder with ``checkpoint.json`` (architecture + the manifest
fields known at training time) and ``weights.npz`` (no pickle).
"""

from __future__ import annotations

import io
import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from smartscope.engines.bundle import write_bundle

__all__ = [
    "CHECKPOINT_NAME",
    "export_bundle",
    "export_checkpoint",
    "export_onnx",
    "load_torch_weights",
]

CHECKPOINT_NAME = "checkpoint.json"
DEFAULT_OPSET = 17


def export_onnx(
    module: torch.nn.Module,
    in_channels: int,
    *,
    input_name: str,
    output_names: list[str],
    example_hw: int = 64,
    opset: int = DEFAULT_OPSET,
) -> bytes:
    """Serialize ``module`` (FP32, eval, CPU) to ONNX with dynamic N/H/W."""
    module = module.eval().float().cpu()
    x = torch.zeros(1, in_channels, example_hw, example_hw)
    axes: dict[str, dict[int, str]] = {input_name: {0: "N", 2: "H", 3: "W"}}
    for o in output_names:
        axes[o] = {0: "N", 2: "H", 3: "W"}
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=DeprecationWarning)
        warnings.simplefilter("ignore", category=UserWarning)
        torch.onnx.export(
            module,
            (x,),
            buf,  # type: ignore[arg-type]  # file-like objects are accepted
            dynamo=False,
            input_names=[input_name],
            output_names=output_names,
            dynamic_axes=axes,
            opset_version=opset,
            do_constant_folding=True,
        )
    return buf.getvalue()


def _verify_onnx(module: torch.nn.Module, onnx_bytes: bytes, in_channels: int, hw: int, seed: int) -> float:
    """Max relative difference between ONNX Runtime and the torch module on random input."""
    import onnxruntime as ort

    rng = np.random.default_rng(seed)
    x = rng.standard_normal((1, in_channels, hw, hw)).astype(np.float32)
    sess = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    got = sess.run(None, {sess.get_inputs()[0].name: x})[0]
    with torch.inference_mode():
        ref = module(torch.from_numpy(x))
    ref_np = (ref[0] if isinstance(ref, tuple) else ref).numpy()
    scale = float(np.abs(ref_np).max()) or 1.0
    return float(np.abs(got - ref_np).max() / scale)


def export_bundle(
    module: torch.nn.Module,
    out: str | Path,
    *,
    manifest_fields: dict[str, Any],
    as_zip: bool = False,
    opset: int = DEFAULT_OPSET,
) -> Path:
    """Export ``module`` and write a bundle at ``out``.

    ``manifest_fields``: :class:`EngineManifest` fields; ``architecture`` needs ``name`` and
    ``params`` (weights and sha256s are filled in here).
    """
    from smartscope.engines.weights import state_to_npz_bytes

    fields = dict(manifest_fields)
    inputs = fields["inputs"]
    in_spec = inputs[0] if isinstance(inputs[0], dict) else inputs[0].model_dump()
    out_specs = [o if isinstance(o, dict) else o.model_dump() for o in fields["outputs"]]
    in_ch = len(in_spec["channels"])
    tile = fields.get("tile") or {}
    tile_d = tile if isinstance(tile, dict) else tile.model_dump()
    mult = int(tile_d.get("multiple_px", 1))
    hw = max(mult * 4, 64 // mult * mult)
    module = module.eval().float().cpu()
    onnx_bytes = export_onnx(
        module,
        in_ch,
        input_name=in_spec["name"],
        output_names=[o["name"] for o in out_specs],
        example_hw=hw,
        opset=opset,
    )
    err = _verify_onnx(module, onnx_bytes, in_ch, hw + mult, seed=1234)
    if err > 1e-4:
        raise RuntimeError(f"ONNX export differs from torch by {err:.2e} (relative) > 1e-4")
    fields["opset"] = opset
    weights = state_to_npz_bytes(module) if fields.get("architecture") is not None else None
    return write_bundle(out, fields, onnx_bytes, weights, as_zip=as_zip)


def load_torch_weights(path: Path) -> dict[str, torch.Tensor]:
    """Weights from ``.npz`` (allow_pickle=False) or a torch state dict.

    ``.pt``/``.pth`` files are read with ``torch.load(weights_only=True)``, torch's
    restricted unpickler that only rebuilds tensors and plain containers; this is used only
    here, when a user brings a torch checkpoint to ``smartscope export``, never when a
    bundle is loaded.
    """
    from smartscope.engines.weights import state_from_npz_bytes

    if path.suffix == ".npz":
        return state_from_npz_bytes(path.read_bytes(), source=str(path))
    obj = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"{path}: expected a state dict of tensors")
    return obj


def export_checkpoint(checkpoint: str | Path, out: str | Path, *, as_zip: bool = False) -> Path:
    """Training checkpoint folder (``checkpoint.json`` + weights) -> bundle."""
    from smartscope.engines.networks import build_network

    ck = Path(checkpoint)
    meta_path = ck / CHECKPOINT_NAME
    if not meta_path.is_file():
        raise FileNotFoundError(f"{meta_path}: not a training checkpoint (missing {CHECKPOINT_NAME})")
    meta = json.loads(meta_path.read_text())
    try:
        fields = dict(meta["manifest"])
        arch = fields["architecture"]
        weights_file = ck / meta.get("weights_file", "weights.npz")
    except KeyError as exc:
        raise ValueError(f"{meta_path}: missing field {exc}") from exc
    module = build_network(arch["name"], arch["params"])
    state = load_torch_weights(weights_file)
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ValueError(f"{weights_file}: weights do not match {arch['name']}: {exc}") from exc
    fields["architecture"] = {
        "name": arch["name"],
        "params": arch["params"],
        "weights_sha256": "0" * 64,
    }
    return export_bundle(module, out, manifest_fields=fields, as_zip=as_zip)
