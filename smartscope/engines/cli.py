"""CLI commands for engines: ``export``, ``compile``, ``engines`` (``list``, ``import``).

``export_command(heldout_input)`` makes the ``export`` command and ``compile_cmd`` is a
plain typer-compatible function, so the top-level CLI registers them with
``app.command("export")(export_command(heldout_input))``; ``engines_app`` is the
``engines`` group (``smartscope engines ROOT`` still lists: a first word that is not a
subcommand is taken as ``list``'s argument). ``app`` bundles them for standalone use (its
``export --bioimageio`` needs ``--test-input``).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import typer
from rich.console import Console
from rich.table import Table

from smartscope.engines.bundle import BundleError, EngineManifest, find_bundles, load_bundle
from smartscope.errors import FormattedErrors, command_app
from smartscope.exceptions import fail

if TYPE_CHECKING:
    import numpy as np

__all__ = ["app", "compile_cmd", "engines_app", "engines_cmd", "export_command", "import_cmd"]

HeldoutInput = Callable[[EngineManifest], "np.ndarray | None"]
"""Re-creates a bundle's held-out input field (camera units) from its provenance, or None."""

_BOOKKEEPING = {"val_loss", "best_step", "steps_run", "heldout_frames_scored"}

app = command_app(help="Engine bundles: export, compile, list.", no_args_is_help=True)
_console = Console()


def export_command(heldout_input: HeldoutInput | None = None) -> Callable[..., None]:
    """The ``export`` command. ``heldout_input`` re-creates a bundle's held-out input from its
    provenance for ``--bioimageio`` without ``--test-input`` (the top-level CLI passes
    :func:`smartscope.models.heldout_input`); without it, ``--test-input`` is needed."""

    def export_cmd(
        checkpoint: Annotated[
            Path,
            typer.Argument(
                help="training checkpoint folder (checkpoint.json + weights.npz); "
                "with --bioimageio an engine bundle"
            ),
        ],
        out: Annotated[Path, typer.Option("--out", "-o", help="bundle folder, or a path ending in .zip")],
        zip_: Annotated[bool, typer.Option("--zip", help="write a zip archive")] = False,
        bioimageio: Annotated[
            bool,
            typer.Option(
                "--bioimageio", help="write a bioimage.io model package (tested with bioimageio.core)"
            ),
        ] = False,
        test_input: Annotated[
            Path | None, typer.Option(help="--bioimageio: held-out input (.tif/.npy, camera units)")
        ] = None,
        author: Annotated[
            list[str] | None, typer.Option(help="--bioimageio: author name (repeat for several)")
        ] = None,
        github_user: Annotated[
            list[str] | None,
            typer.Option(
                "--github-user",
                help="--bioimageio: GitHub user of the --author in the same position (the Model Zoo "
                "asks for one)",
            ),
        ] = None,
        license_: Annotated[
            str, typer.Option("--license", help="--bioimageio: SPDX licence id")
        ] = "BSD-3-Clause",
    ) -> None:
        """Export a torch training checkpoint to a verified engine bundle (ONNX + engine.json),
        or (``--bioimageio``) an engine bundle to a bioimage.io model package for Fiji, ilastik,
        QuPath and CAREamics."""
        if bioimageio:
            from smartscope.engines.bioimageio_export import (
                BioimageioExportError,
                PackageAuthor,
                export_bioimageio,
            )

            names = list(author or ["smartscope developers"])
            users = list(github_user or [])
            if len(users) > len(names):
                fail(
                    f"--github-user: {len(users)} given for {len(names)} --author; give each "
                    "author's user right after the --author"
                )
            pairs = [(n, users[k] if k < len(users) else None) for k, n in enumerate(names)]
            target = out if out.suffix == ".zip" or not zip_ else out.with_suffix(".zip")
            try:
                given = test_input if test_input is not None else _recreated_input(checkpoint, heldout_input)
                pkg = export_bioimageio(
                    checkpoint,
                    target,
                    test_input=given,
                    authors=[PackageAuthor(n, u) for n, u in pairs],
                    license=license_,
                )
            except (BundleError, BioimageioExportError) as exc:
                fail(f"export failed: {exc}")
            _console.print(f"wrote {pkg} (bioimage.io model; bioimageio test passed)")
            return
        from smartscope.engines.export import export_checkpoint

        try:
            path = export_checkpoint(checkpoint, out, as_zip=zip_)
        except (FileNotFoundError, ValueError, BundleError) as exc:
            fail(f"export failed: {exc}")
        man = load_bundle(path).manifest
        _console.print(f"wrote {path}  ({man.name}, task={man.task}, onnx sha256 {man.onnx_sha256[:12]}…)")

    return export_cmd


def _recreated_input(bundle: Path, heldout_input: HeldoutInput | None) -> np.ndarray:
    """The held-out input ``heldout_input`` re-creates for ``bundle``; an error when it cannot."""
    from smartscope.engines.bioimageio_export import BioimageioExportError

    man = load_bundle(bundle).manifest
    raw = heldout_input(man) if heldout_input is not None else None
    if raw is None:
        raise BioimageioExportError(
            f"{bundle}: cannot re-create a held-out field for task {man.task!r}; "
            "pass --test-input FILE (.tif or .npy, camera units)"
        )
    return raw


app.command("export")(export_command())


@app.command("compile")
def compile_cmd(
    bundle: Annotated[Path, typer.Argument(help="engine bundle folder or zip")],
    precision: Annotated[Literal["fp16", "fp32"], typer.Option(help="fp16 or fp32")] = "fp16",
    max_hw: Annotated[int, typer.Option(help="largest H/W in the optimization profile")] = 2048,
    max_batch: Annotated[int, typer.Option(help="largest batch in the profile")] = 8,
    device: Annotated[str, typer.Option(help="CUDA device")] = "cuda:0",
    cache_dir: Annotated[Path | None, typer.Option(help="plan + timing cache folder")] = None,
) -> None:
    """Build (or reuse) the TensorRT plan of a bundle for this GPU and TensorRT version."""
    from smartscope.engines.backends import BackendUnavailable
    from smartscope.engines.backends.tensorrt_backend import TensorRTBackend, tensorrt_available

    ok, why = tensorrt_available()
    if not ok:
        _console.print(f"[yellow]TensorRT unavailable here: {why}; nothing compiled[/yellow]")
        raise typer.Exit(2)
    try:
        b = load_bundle(bundle)
        be = TensorRTBackend(
            b,
            device=device,
            precision=precision,
            max_hw=max_hw,
            max_batch=max_batch,
            cache_dir=cache_dir,
        )
    except (BundleError, BackendUnavailable) as exc:
        fail(f"compile failed: {exc}")
    _console.print(f"{be.describe()}\nplan: {be.plan_path}")


class _ListByDefault(FormattedErrors):
    """``engines ROOT`` means ``engines list ROOT``: a first word that is no subcommand lists."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        if not args or (args[0] not in self.commands and args[0] not in ("--help", "-h")):
            args = ["list", *args]
        return super().parse_args(ctx, args)


engines_app = command_app(
    cls=_ListByDefault, help="Engine bundles: list them, import bioimage.io models.", no_args_is_help=False
)
app.add_typer(engines_app, name="engines")


@engines_app.command("import")
def import_cmd(
    model: Annotated[Path, typer.Argument(help="bioimage.io model package (.zip, folder or rdf.yaml)")],
    out: Annotated[Path, typer.Option("--out", "-o", help="engine bundle folder (or .zip) to write")],
    name: Annotated[str | None, typer.Option(help="engine name (default: the model's name)")] = None,
) -> None:
    """Turn a bioimage.io model (ONNX or TorchScript weights) into a verified engine bundle.

    The bundle is kept only if smartscope's runtime reproduces the package's test output;
    what engine.json cannot express (normalization, axes, weights) is refused, naming it.
    """
    from smartscope.engines.bioimageio_import import BioimageioImportError, import_bioimageio

    try:
        rep = import_bioimageio(model, out, name=name)
    except (BundleError, BioimageioImportError) as exc:
        fail(f"import failed: {exc}")
    _console.print(
        f"wrote {rep.bundle} ({rep.weights} weights); test output reproduced within "
        f"{rep.max_abs_diff:.3g} (atol {rep.atol:g}, rtol {rep.rtol:g})"
    )
    for note in rep.notes:
        _console.print(f"note: {note}")


@engines_app.command("list")
def engines_cmd(
    root: Annotated[Path, typer.Argument(help="folder to search for bundles")] = Path("models/bundles"),
    as_json: Annotated[bool, typer.Option("--json", help="print JSON instead of a table")] = False,
) -> None:
    """List engine bundles under ROOT with their metadata (invalid ones are flagged)."""
    rows: list[dict[str, Any]] = []
    for p in find_bundles(root):
        try:
            man = load_bundle(p).manifest
        except BundleError as exc:
            rows.append({"path": str(p), "error": str(exc)})
            continue
        rows.append(
            {
                "path": str(p),
                "name": man.name,
                "task": man.task,
                "version": man.version,
                "method": man.provenance.method,
                "inputs": [f"{t.name}{t.channels}" for t in man.inputs],
                "outputs": [f"{t.name}{t.channels}" for t in man.outputs],
                "tile": f"{man.tile.size_px}/{man.tile.overlap_px}",
                "metrics": man.metrics,
                "onnx_sha256": man.onnx_sha256,
                "command": man.provenance.command,
            }
        )
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    table = Table(title=f"engine bundles under {root}")
    for col in ("name", "task", "method", "tile", "held-out metrics", "path"):
        table.add_column(col, overflow="fold")
    for r in rows:
        if "error" in r:
            table.add_row("[red]INVALID[/red]", "", "", "", str(r["error"]), str(r["path"]))
            continue
        metrics = "\n".join(f"{k} {v:.3g}" for k, v in r["metrics"].items() if k not in _BOOKKEEPING)
        table.add_row(
            str(r["name"]),
            str(r["task"]),
            str(r["method"]),
            str(r["tile"]),
            metrics,
            str(r["path"]),
        )
    _console.print(table)
