"""SMLM commands: ``smartscope train smlm``, ``smartscope localize``, ``smartscope calibrate``.

Each imports numpy/torch only when it runs. Bad input exits with one ``error:`` line that
names the option or file and the reason.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from smartscope.batch.command import ChunkFramesOption, ClusterOption, GpuOption, WorkersOption, fail
from smartscope.errors import command_app, describe

if TYPE_CHECKING:
    from smartscope.batch.stacks import Stack

__all__ = ["calibrate_app", "localize_cmd", "main", "train_smlm_cmd"]


def _read_stack(path: Path, what: str) -> Any:
    import tifffile

    if not path.is_file():
        fail(f"{what} {path} does not exist")
    try:
        data = tifffile.imread(path)
    except Exception as exc:  # tifffile raises several types for a bad file
        fail(f"{what} {path}: not a readable TIFF ({exc})")
    if data.ndim == 2:
        data = data[None]
    if data.ndim != 3:
        fail(f"{what} {path}: expected (T, Y, X) or (Z, Y, X) frames, got shape {data.shape}")
    return data


# ============================================================================ train


# the shipped bundles a calibrated training fine-tunes from (2-D / 3-D PSF)
PARENT_2D = "smlm-decode-2d-user"
PARENT_3D = "smlm-decode-3d-astig"
FINE_TUNE_STEPS = 1500
FINE_TUNE_MINUTES = 12.0  # training budget; validation and export add about a minute


def train_smlm_cmd(
    ctx: typer.Context,
    out: Annotated[Path, typer.Option("--out", "-o", help="bundle folder to write")] = Path(
        "models/bundles/smlm-decode-small"
    ),
    psf: Annotated[
        Path | None, typer.Option(help="PSF calibration (smartscope calibrate psf); 3-D PSF → 3-D network")
    ] = None,
    camera: Annotated[
        Path | None, typer.Option(help="camera calibration (smartscope calibrate camera)")
    ] = None,
    like: Annotated[
        Path | None,
        typer.Option(
            help="your recording (TIFF): photon, background and density ranges of the training data "
            "come from it, and the detection threshold is chosen on data rendered like it (needs --camera)"
        ),
    ] = None,
    from_scratch: Annotated[
        bool,
        typer.Option(
            help=f"with --psf/--camera: train from random weights instead of fine-tuning the shipped "
            f"{PARENT_2D} (2-D) or {PARENT_3D} (3-D) bundle"
        ),
    ] = False,
    minutes: Annotated[
        float | None,
        typer.Option(help=f"wall-clock training budget [fine-tune: {FINE_TUNE_MINUTES:g}; from scratch: 18]"),
    ] = None,
    steps: Annotated[
        int | None,
        typer.Option(help=f"stop after this many steps [fine-tune: {FINE_TUNE_STEPS}; 0: no limit]"),
    ] = None,
    batch: Annotated[int, typer.Option(help="three-frame windows per step")] = 16,
    lr: Annotated[float, typer.Option(help="peak learning rate (cosine decay)")] = 1e-3,
    width: Annotated[
        int | None, typer.Option(help="U-Net base width [the parent's; from scratch: 16]")
    ] = None,
    depth: Annotated[int | None, typer.Option(help="U-Net depth [the parent's; from scratch: 2]")] = None,
    tile: Annotated[int, typer.Option(help="training tile edge, px")] = 40,
    pixel_size_um: Annotated[
        float | None, typer.Option(help="camera pixel in the sample (default: the PSF's, else 0.1)")
    ] = None,
    density_max: Annotated[
        float, typer.Option(help="highest emitter density, /µm² (log-uniform from 0.03)")
    ] = 3.0,
    photons_min: Annotated[float, typer.Option(help="dimmest emitter, photons per frame")] = 300.0,
    photons_max: Annotated[float, typer.Option(help="brightest emitter, photons per frame")] = 8000.0,
    bg_min: Annotated[float, typer.Option(help="lowest background, photons/px/frame")] = 3.0,
    bg_max: Annotated[float, typer.Option(help="highest background, photons/px/frame")] = 150.0,
    eval_windows: Annotated[int, typer.Option(help="validation / held-out windows")] = 64,
    seed: Annotated[int, typer.Option(help="random seed")] = 0,
    device: Annotated[str, typer.Option(help="cpu, cuda, cuda:0 ...")] = "cpu",
    threads: Annotated[int, typer.Option(help="torch CPU threads")] = 2,
    checkpoint_every: Annotated[int, typer.Option(help="write weights every N steps (0: never)")] = 0,
    checkpoint_dir: Annotated[
        Path | None, typer.Option(help="folder for those checkpoints (default: OUT-checkpoints)")
    ] = None,
    init_bundle: Annotated[
        Path | None, typer.Option(help="start from this bundle's weights instead of the shipped parent")
    ] = None,
    z_weight: Annotated[float, typer.Option(help="3-D: weight of the z term in the loss")] = 1.0,
) -> None:
    """Train the DECODE-class SMLM localizer on simulated data — rendered with your PSF and
    camera when given — and write an engine bundle (minutes printed).

    With --psf or --camera it fine-tunes the shipped bundle of the same shape (2-D or 3-D)
    for a few minutes; --from-scratch trains a new one (hours on a CPU)."""
    import time

    from smartscope.engines.networks.smlm import SMLMNetConfig
    from smartscope.models import shipped_bundle
    from smartscope.models.provenance import command_line
    from smartscope.models.smlm.calibrate import UserCalibration
    from smartscope.models.smlm.train import SimSpec, parent_config, train_smlm

    try:
        cal = UserCalibration.load(psf, camera) if (psf or camera) else None
    except (FileNotFoundError, ValueError) as exc:
        fail(str(exc))
    px_nm = (
        pixel_size_um * 1000.0
        if pixel_size_um is not None
        else (cal.psf.pixel_nm if cal is not None and cal.psf is not None else 100.0)
    )
    three_d = cal is not None and cal.psf is not None and cal.psf.is_3d
    parent = init_bundle
    if parent is None and cal is not None and not from_scratch:
        parent = shipped_bundle(PARENT_3D if three_d else PARENT_2D)
    if parent is not None and from_scratch:
        fail("--from-scratch: leave out --init-bundle, or --from-scratch")
    base = SMLMNetConfig(base_width=16, depth=2)
    if parent is not None:
        try:
            base = parent_config(parent)
        except (FileNotFoundError, ValueError) as exc:
            fail(f"--init-bundle: {describe(exc) or exc}")
        for name, given, have in (("--width", width, base.base_width), ("--depth", depth, base.depth)):
            if given is not None and given != have:
                fail(
                    f"{name} {given}: the parent bundle {parent.name} is {name[2:]} {have}; "
                    f"leave {name} out to fine-tune it, or add --from-scratch"
                )
        if (base.z_range_nm is not None) != three_d:
            dims = "3" if base.z_range_nm else "2"
            fail(f"--init-bundle: {parent.name} is a {dims}-D network, the PSF is not")
    tuned = parent is not None
    minutes = minutes if minutes is not None else (FINE_TUNE_MINUTES if tuned else 18.0)
    steps = steps if steps is not None else (FINE_TUNE_STEPS if tuned else 0)
    stats = None
    if like is not None:
        stats = _like_stats(like, cal, px_nm)
    try:
        net = SMLMNetConfig(
            base_width=width or base.base_width,
            depth=depth or base.depth,
            input_scale_e=base.input_scale_e,
            photon_scale_e=base.photon_scale_e,
        )
        ranges = {
            "density_per_um2": (0.03, density_max),
            "photons": (photons_min, photons_max),
            "bg_photons": (bg_min, bg_max),
        }
        common = {
            "tile_px": tile,
            "pixel_nm": px_nm,
            "emccd_fraction": 0.25 if cal is None or cal.camera is None else 0.0,
        }
        spec = SimSpec(**common, **(stats.training_ranges() if stats else ranges))  # type: ignore[arg-type]
        vspec = SimSpec(**common, **stats.validation_ranges()) if stats else None  # type: ignore[arg-type]
    except ValueError as exc:
        fail(describe(exc) or str(exc))
    argv = list(sys.argv)
    cmd = command_line(ctx=ctx) if ctx.info_name else command_line(argv)
    if argv and argv[0].endswith("cli.py"):
        argv[0:1] = ["python", "-m", "smartscope.models.smlm.cli"]
        cmd = command_line(argv)
    if tuned:
        assert parent is not None
        typer.echo(
            f"fine-tuning {parent.name} ({steps} steps or {minutes:g} min; --from-scratch to train anew)"
        )
    if stats is not None:
        typer.echo(stats.describe())
    t0 = time.time()
    try:
        path = train_smlm(
            out,
            minutes=minutes,
            max_steps=steps or None,
            batch=batch,
            lr=lr,
            seed=seed,
            net_config=net,
            spec=spec,
            threads=threads,
            command=cmd,
            eval_windows=eval_windows,
            calibration=cal,
            device=device,
            checkpoint_every=checkpoint_every,
            checkpoint_dir=checkpoint_dir,
            init_bundle=parent,
            z_weight=z_weight,
            validation_spec=vspec,
            like=stats,
        )
    except ValueError as exc:
        fail(str(exc))
    typer.echo(f"wrote {path} after {(time.time() - t0) / 60:.1f} minutes (training + validation + export)")


def _like_stats(like: Path, cal: Any, pixel_nm: float) -> Any:
    """--like: the recording's photon, background and density percentiles."""
    from smartscope.models.smlm.localize_classical import camera_model_for
    from smartscope.models.smlm.recording import recording_stats
    from smartscope.simulators.camera import CameraMaps

    if cal is None or cal.camera is None:
        fail("--like: needs --camera (the recording's ADU must become photoelectrons)")
    data = _read_stack(like, "--like recording")
    maps = cal.camera_maps
    h, w = data.shape[1:]
    sub = None
    if maps is not None and maps.shape[0] >= h and maps.shape[1] >= w:  # the sensor's top-left corner
        sub = CameraMaps.from_arrays(
            maps.offset_adu[:h, :w], maps.gain_adu_per_e[:h, :w], maps.read_noise_e[:h, :w]
        )
    psf = cal.psf if cal.psf is not None and not cal.psf.is_3d else None
    try:
        return recording_stats(like, data, camera_model_for(cal.camera, maps=sub), pixel_nm, psf)
    except ValueError as exc:
        fail(str(exc))


def main() -> None:
    typer.run(train_smlm_cmd)


# ============================================================================ localize


def localize_cmd(
    inputs: Annotated[
        list[str],
        typer.Argument(
            help="raw camera frames: TIFF / OME-TIFF stacks, globs, run folders or OME-Zarr images",
            show_default=False,
        ),
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="folder for table, render, drift")],
    method: Annotated[str, typer.Option(help="classical or network")] = "classical",
    bundle: Annotated[Path | None, typer.Option(help="DECODE-class bundle (network)")] = None,
    backend: Annotated[str, typer.Option(help="auto, onnxruntime, torch, tensorrt")] = "auto",
    psf: Annotated[Path | None, typer.Option(help="PSF calibration: spline fit (3-D PSF: x, y, z)")] = None,
    camera_file: Annotated[Path | None, typer.Option(help="camera calibration JSON")] = None,
    calibration: Annotated[
        Path | None, typer.Option(hidden=True, help="the old name of --camera-file")
    ] = None,
    force: Annotated[
        bool, typer.Option(help="use a bundle whose pixel size or camera does not match")
    ] = False,
    refine: Annotated[
        bool, typer.Option(help="network: polish each detection by the spline MLE of --psf")
    ] = False,
    psf_model: Annotated[
        str, typer.Option(help="classical with --psf: spline, or gaussian_z (its calibrated Gaussian-z)")
    ] = "spline",
    pixel_size_um: Annotated[
        float | None,
        typer.Option(
            help="camera pixel in the sample plane "
            "[default: the --psf file's, else the stack's calibration, else 0.1]"
        ),
    ] = None,
    psf_sigma_nm: Annotated[float, typer.Option(help="Gaussian PSF sigma (classical, no --psf)")] = 100.0,
    camera: Annotated[str, typer.Option(help="scmos or emccd (without --camera-file)")] = "scmos",
    offset_adu: Annotated[float | None, typer.Option(help="camera offset [default: 100]")] = None,
    gain_adu_per_e: Annotated[
        float | None, typer.Option(help="conversion gain, ADU per e⁻ [default: 2]")
    ] = None,
    em_gain: Annotated[float, typer.Option(help="EM gain (EMCCD)")] = 1.0,
    read_noise_e: Annotated[float, typer.Option(help="read noise, e⁻ rms")] = 0.9,
    threshold: Annotated[
        float | None, typer.Option(help="network detection threshold (default: the bundle's)")
    ] = None,
    render_pixel_nm: Annotated[float, typer.Option(help="super-resolution pixel")] = 20.0,
    drift_correct: Annotated[
        bool,
        typer.Option(
            help="correct table and render by the drift estimate (>= 200 frames, >= 500 localizations)"
        ),
    ] = False,
    cluster: ClusterOption = None,
    workers: WorkersOption = None,
    chunk_frames: ChunkFramesOption = 256,
    gpu: GpuOption = False,
) -> None:
    """Localize recorded stacks: localizations.csv (+ ThunderSTORM CSV and Picasso HDF5, with
    z in 3-D), Gaussian render (TIFF; 3-D: z-colour PNG) and drift estimate in OUT (in
    OUT/<stack>/ for several stacks).

    Frames are read page by page (memory stays constant whatever the stack's size). With
    --cluster the stacks are cut into chunks of --chunk-frames, localized by Dask workers and
    merged in frame order; drift is estimated (and with --drift-correct corrected) on the
    merged table, and the render made from it.
    """
    if calibration is not None:
        if camera_file is not None and camera_file != calibration:
            fail("--calibration is the old name of --camera-file: give one of them")
        camera_file = calibration
    from pydantic import ValidationError

    from smartscope.batch.cluster import worker_threads
    from smartscope.batch.command import cluster_spec, run_job, warn
    from smartscope.batch.jobs import PartStore, stack_fingerprint
    from smartscope.batch.stacks import StackError, resolve_inputs
    from smartscope.config.stages import SMLMCameraConfig, SMLMStageConfig
    from smartscope.models.smlm.batch import LocalizeJob, open_stage, output_folders

    try:
        stacks = resolve_inputs(inputs)
    except StackError as exc:
        fail(str(exc))
        raise
    for s in stacks:
        if s.n_channels != 1:
            fail(f"{s.path}: localize reads one channel; this stack has {s.n_channels} {list(s.channels)}")
    camera_given = camera_file is not None or offset_adu is not None or gain_adu_per_e is not None
    for msg, refused in input_dtype_notes(stacks, camera_given):
        if refused:
            fail(msg)
        warn(msg)
    if psf is not None and pixel_size_um is None:
        from smartscope.simulators.psf_models import load_psf

        try:
            pixel_size_um = load_psf(psf).pixel_nm / 1000.0
        except (FileNotFoundError, ValueError) as exc:
            fail(f"--psf: {exc}")
    configs = []
    defaults = SMLMCameraConfig()
    try:
        for s in stacks:
            px = pixel_size_um or (s.pixel_size_um[1] if s.pixel_size_um is not None else None)
            if px is None:
                px = ASSUMED_PIXEL_UM
                warn(f"{s.path}: records no pixel size; assuming {px:g} µm (give --pixel-size-um)")
            configs.append(
                SMLMStageConfig(
                    method=method,  # type: ignore[arg-type]
                    bundle=bundle,
                    backend=backend,  # type: ignore[arg-type]
                    pixel_size_um=px,
                    psf_sigma_nm=psf_sigma_nm,
                    psf_file=psf,
                    camera_file=camera_file,
                    force=force,
                    refine=refine,
                    psf_model=psf_model,  # type: ignore[arg-type]
                    prob_threshold=threshold,
                    camera=SMLMCameraConfig(
                        kind=camera,  # type: ignore[arg-type]
                        offset_adu=defaults.offset_adu if offset_adu is None else offset_adu,
                        gain_adu_per_e=defaults.gain_adu_per_e if gain_adu_per_e is None else gain_adu_per_e,
                        em_gain=em_gain,
                        read_noise_e=read_noise_e,
                    ),
                    render_pixel_nm=render_pixel_nm,
                )
            )
    except ValidationError as exc:
        fail(describe(exc) or str(exc))
    if gpu and method != "network":
        fail("--gpu: the classical localizer runs on CPU; --gpu is for --method network")
    from smartscope.engines.bundle import BundleError

    bundle_sha = None
    try:  # a bad bundle or calibration file fails here, once, not in every chunk
        for c in {c.model_dump_json(): c for c in configs}.values():
            stage = open_stage(c)
            if stage.engine is not None:
                bundle_sha = stage.engine.bundle.onnx_sha256
    except (BundleError, FileNotFoundError, ValueError) as exc:
        fail(describe(exc) or str(exc))
    spec = cluster_spec(cluster, workers, len(stacks), gpu)

    fingerprint = {
        "command": "localize",
        "configs": [c.model_dump(mode="json") for c in configs],
        "drift_correct": drift_correct,
        "bundle_sha256": bundle_sha,
        "calibration_sha256": [_sha256(f) for f in (psf, camera_file)],
        "stacks": [stack_fingerprint(s) for s in stacks],
    }
    job = LocalizeJob(
        stacks=tuple(stacks),
        configs=tuple(configs),
        folders=output_folders(stacks, out),
        parts=PartStore(out, fingerprint),
        cpu_threads=worker_threads(spec) if spec.distributed else 0,
        drift_correct=drift_correct,
    )
    run_job(job, spec, out=out, gpu=gpu, chunk_frames=chunk_frames, label="localizing")


ASSUMED_PIXEL_UM = 0.1  # a stack that records no pixel size, without --pixel-size-um (named when used)


def input_dtype_notes(stacks: Sequence[Stack], camera_given: bool) -> list[tuple[str, bool]]:
    """(message, refused) for stacks whose pixels are not plainly camera counts.

    uint16 is what cameras deliver. Other integers are read as counts too, with a warning
    naming the camera numbers assumed unless they were given. Floating-point pixels are no
    camera's: without camera numbers they are refused (given them, they are read as ADU;
    pixels already in photoelectrons take ``--offset-adu 0 --gain-adu-per-e 1``).
    """
    import numpy as np

    from smartscope.config.stages import SMLMCameraConfig

    out = []
    defaults = SMLMCameraConfig()
    numbers = (
        f"offset {defaults.offset_adu:g} ADU, gain {defaults.gain_adu_per_e:g} ADU/e⁻ "
        "(give --camera-file, or --offset-adu and --gain-adu-per-e)"
    )
    for s in stacks:
        kind = np.dtype(s.dtype).kind
        if s.dtype == "uint16" or camera_given:
            continue
        if kind in "ui":
            out.append(
                (f"{s.path}: {s.dtype} pixels read as camera counts with the default {numbers}", False)
            )
        else:
            out.append(
                (
                    f"{s.path}: {s.dtype} pixels are not camera counts; localize needs the camera "
                    "numbers that turn them into photons: --camera-file, or --offset-adu and "
                    "--gain-adu-per-e (0 and 1 for pixels already in photoelectrons)",
                    True,
                )
            )
    return out


def _sha256(path: Path | None) -> str | None:
    """A calibration file's content hash: a changed file does not reuse old parts."""
    from smartscope.simulators.psf_models import file_sha256

    return file_sha256(path) if path is not None else None


# ============================================================================ calibrate

calibrate_app = command_app(
    help="Calibrate your microscope for SMLM: PSF (beads or data) and camera (photon transfer).",
    no_args_is_help=True,
)


@calibrate_app.command("psf")
def calibrate_psf_cmd(
    beads: Annotated[Path | None, typer.Argument(help="bead z-stack TIFF (Z, Y, X)")] = None,
    z_step_nm: Annotated[float | None, typer.Option(help="focus step between slices (beads)")] = None,
    from_data: Annotated[
        Path | None, typer.Option(help="SMLM stack (T, Y, X): a 2-D PSF from its isolated emitters")
    ] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="PSF file to write (.npz)")] = Path("psf.npz"),
    pixel_size_um: Annotated[float, typer.Option(help="camera pixel in the sample plane")] = 0.1,
    camera: Annotated[Path | None, typer.Option(help="camera calibration (ADU → photoelectrons)")] = None,
    roi_px: Annotated[int, typer.Option(help="model window, px (odd)")] = 21,
    z_min_nm: Annotated[float, typer.Option(help="lowest z kept in the model")] = -700.0,
    z_max_nm: Annotated[float, typer.Option(help="highest z kept in the model")] = 700.0,
    reverse: Annotated[bool, typer.Option(help="the stack was taken moving the focus down")] = False,
    sigma_nm: Annotated[float, typer.Option(help="--from-data: starting Gaussian sigma")] = 130.0,
    model: Annotated[
        str,
        typer.Option(
            help="--from-data: auto (spline or Gaussian, whichever explains held-out emitters better), "
            "spline or gaussian"
        ),
    ] = "auto",
) -> None:
    """Fit a cubic-spline PSF from a bead z-stack (``BEADS --z-step-nm N``) or from isolated
    emitters in SMLM data (``--from-data STACK``); write it with a fit report (JSON) and a
    plot (PNG) beside it."""
    import time

    from smartscope.models.smlm.calibrate import (
        calibrate_psf_beads,
        calibrate_psf_from_data,
        plot_psf_report,
    )

    if (beads is None) == (from_data is None):
        fail("give a bead stack (BEADS --z-step-nm N) or --from-data STACK, not both or neither")
    cam = _camera_model(camera)
    t0 = time.time()
    try:
        if beads is not None:
            if z_step_nm is None:
                fail("--z-step-nm: the focus step between bead slices is required")
            data = _read_stack(beads, "bead stack")
            psf, rep = calibrate_psf_beads(
                data,
                z_step_nm,
                pixel_size_um * 1000.0,
                cam,
                roi_px=roi_px,
                z_range_nm=(z_min_nm, z_max_nm),
                reverse=reverse,
                source={"file": beads.name, "camera": camera.name if camera else None},
            )
        else:
            assert from_data is not None
            data = _read_stack(from_data, "SMLM stack")
            psf, rep = calibrate_psf_from_data(
                data,
                pixel_size_um * 1000.0,
                cam,
                sigma_guess_nm=sigma_nm,
                roi_px=min(roi_px, 15),
                model=model,  # type: ignore[arg-type]
                source={"file": from_data.name, "camera": camera.name if camera else None},
            )
    except ValueError as exc:
        fail(str(exc))
    path = psf.save(out)
    plot = plot_psf_report(psf, rep, out.with_suffix(".png"))
    fit = {
        **rep.summary(),
        "z_nm": rep.z_nm.tolist(),
        "reduced_chi2": rep.reduced_chi2.tolist(),
        "rel_residual": rep.rel_residual.tolist(),
        "sigma_x_nm": rep.sigma_x_nm.tolist(),
        "sigma_y_nm": rep.sigma_y_nm.tolist(),
        "gaussian_z": rep.gaussian_z.to_dict() if rep.gaussian_z is not None else None,
    }
    fit_path = out.with_name(out.stem + "_fit.json")
    fit_path.write_text(json.dumps(fit, indent=1) + "\n")
    kind = f"3-D, z {psf.z_range_nm[0]:.0f}…{psf.z_range_nm[1]:.0f} nm" if psf.is_3d else "2-D"
    if rep.choice is not None:
        typer.echo(rep.choice.describe())
        fit["model_choice"] = dataclasses.asdict(rep.choice)
    typer.echo(
        f"wrote {path} ({kind}, {psf.size_px} px window, {rep.n_emitters} "
        f"{'beads' if beads is not None else 'emitters'}; median reduced χ² "
        f"{rep.summary()['median_reduced_chi2']:.2f}), {plot.name}, {fit_path.name} "
        f"in {(time.time() - t0) / 60:.1f} min"
    )


def _camera_model(camera: Path | None) -> Any:
    from smartscope.models.smlm.localize_classical import camera_model_for
    from smartscope.simulators.camera_calibration import load_camera

    if camera is None:
        return None
    try:
        cal, _maps = load_camera(camera)
    except (FileNotFoundError, ValueError) as exc:
        fail(f"--camera: {exc}")
    return camera_model_for(cal)  # nominal numbers: bead/emitter ROIs lie anywhere on the sensor


@calibrate_app.command("camera")
def calibrate_camera_cmd(
    extra_flats: Annotated[
        list[Path] | None, typer.Argument(help="more flat-field stacks (after --flats F1.tif)")
    ] = None,
    dark: Annotated[Path | None, typer.Option(help="dark stack (T, Y, X): shutter closed")] = None,
    flats: Annotated[
        list[Path] | None, typer.Option(help="flat-field stacks at several light levels")
    ] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="camera file to write (.json)")] = Path(
        "camera.json"
    ),
    kind: Annotated[str, typer.Option(help="scmos or emccd")] = "scmos",
    em_gain: Annotated[float, typer.Option(help="EMCCD: the EM gain the camera was set to")] = 1.0,
    per_pixel: Annotated[
        bool | None, typer.Option("--per-pixel/--no-per-pixel", help="per-pixel maps (default: sCMOS)")
    ] = None,
) -> None:
    """Offset, gain and read noise (per pixel for sCMOS) from the photon-transfer curve:
    ``--dark DARK.tif --flats F1.tif F2.tif ...``. Writes the camera file (+ maps .npz) and
    the photon-transfer plot."""
    from smartscope.models.smlm.calibrate import calibrate_camera, plot_ptc

    if dark is None:
        fail("--dark: a dark stack is required")
    all_flats = list(flats or []) + list(extra_flats or [])
    if not all_flats:
        fail("--flats: give at least one flat-field stack (several light levels are better)")
    if kind not in ("scmos", "emccd"):
        fail(f"--kind: {kind!r} must be 'scmos' or 'emccd'")
    d = _read_stack(dark, "dark stack")
    fl = [_read_stack(f, "flat stack") for f in all_flats]
    try:
        cal, maps, rep = calibrate_camera(
            d,
            fl,
            kind,  # type: ignore[arg-type]
            em_gain,
            per_pixel,
            source={"dark": dark.name, "flats": [f.name for f in all_flats]},  # names: files travel
        )
    except ValueError as exc:
        fail(str(exc))
    path = cal.save(out, maps)
    plot = plot_ptc(rep, cal, out.with_suffix(".png"))
    maps_note = f", per-pixel maps {cal.shape}" if maps is not None else ", no per-pixel maps"
    typer.echo(rep["summary"])
    typer.echo(
        f"wrote {path}: offset {cal.offset_adu:.1f} ADU, gain {cal.gain_adu_per_e:.4g} ADU/e⁻, "
        f"read noise {cal.read_noise_e:.3g} e⁻ (PTC R² {rep['ptc_r2']:.4f}){maps_note}; {plot.name}"
    )
