"""What every demo scenario shares: its shape, the virtual microscope's .cfg, plots, reports.

A scenario is a module with the same four parts (:class:`Scenario`): ``run`` (its
parameters, from :mod:`smartscope.config.scenarios`, an output folder and :class:`Hooks`
→ a result that holds the run folder and the loop's :class:`~smartscope.loop.RunResult`), ``score`` (the
result against the simulator's ground truth, as JSON), ``plot`` (a PNG beside the run) and
``demo_params`` (what ``smartscope demo --scenario NAME --seed S --frames N`` runs).
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, Literal, Protocol, TypeVar

from smartscope.exceptions import InvalidValue
from smartscope.loop import Loop, RunFailed, RunResult, RunStatus
from smartscope.metrics import strict_json
from smartscope.report import write_report
from smartscope.simulators import get_virtual_microscope, virtual_config_path
from smartscope.simulators.microscope import VirtualMicroscope

__all__ = [
    "NO_HOOKS",
    "VIRTUAL_LIGHTS",
    "Hooks",
    "Scenario",
    "ScenarioResult",
    "add_to_report",
    "json_safe",
    "plt",
    "require_ok",
    "save_figure",
    "virtual_cfg_file",
    "virtual_lights",
    "virtual_microscope_config",
]


class ScenarioResult(Protocol):
    """What every scenario's ``run`` returns: at least its (main) run folder and loop result."""

    @property
    def run_dir(self) -> str: ...

    @property
    def loop(self) -> RunResult: ...


P = TypeVar("P")
R = TypeVar("R", bound=ScenarioResult)


@dataclass(frozen=True)
class Hooks:
    """What a caller may attach to a scenario's runs: a progress callback (frames stored,
    frames asked) and a look at each loop before it starts (listeners, remote control)."""

    progress: Callable[[int, int | None], None] | None = None
    on_loop: Callable[[Loop], None] | None = None

    def chain(self, own: Callable[[Loop], None]) -> Callable[[Loop], None]:
        """The scenario's own ``on_loop`` followed by the caller's."""

        def both(loop: Loop) -> None:
            own(loop)
            if self.on_loop is not None:
                self.on_loop(loop)

        return both


NO_HOOKS = Hooks()


@dataclass(frozen=True)
class Scenario(Generic[P, R]):
    """One demo scenario: parameters in, a scored and plotted run out."""

    name: str
    summary: str
    params: type[P]
    run: Callable[[P, Path, Hooks], R]
    score: Callable[[R], dict[str, Any]]
    plot: Callable[[R, Path], Path]
    demo_params: Callable[[int, int | None], P]


def require_ok(result: RunResult, what: str) -> RunResult:
    """A scenario's run must end completed or stopped (its own goal reached), never failed."""
    if result.status is RunStatus.FAILED:
        raise RunFailed(f"the {what} run failed: {result.reason} (run folder {result.run_dir})")
    return result


def virtual_microscope_of(loop: Loop) -> VirtualMicroscope:
    """The simulator behind a loop that runs on the virtual microscope (its ground truth)."""
    core = getattr(loop.driver, "core", None)
    if core is None:
        raise RunFailed(
            f"driver {loop.driver.name} has no Micro-Manager core: this scenario needs the virtual microscope"
        )
    vm: VirtualMicroscope = get_virtual_microscope(core)
    return vm


def virtual_cfg_file(
    path: Path,
    scenario: str,
    seed: int = 0,
    sensor_px: int = 256,
    pacing: Literal["RealTime", "AsFastAsPossible"] = "AsFastAsPossible",
    interval_ms: float = 0.0,
    exposure_ms: float = 10.0,
    mirror_rad: Sequence[float] = (),
    powers_mw: Mapping[str, float] | None = None,
) -> Path:
    """Write a virtual-microscope ``.cfg`` (the shipped one with these start-up values;
    ``powers_mw``: light sources the .cfg sets, by :data:`VIRTUAL_LIGHTS` name, instead of
    the scene's own start-up powers)."""
    base = Path(virtual_config_path()).read_text(encoding="utf-8").splitlines()
    values = {
        "Scenario": scenario,
        "Seed": str(int(seed)),
        "SensorSize": str(int(sensor_px)),
        "Pacing": pacing,
        "Exposure": f"{exposure_ms:g}",
    }
    lines = []
    for line in base:
        parts = line.split(",")
        if line.startswith("#py Property,Camera,") and len(parts) == 4 and parts[2] in values:
            line = f"#py Property,Camera,{parts[2]},{values.pop(parts[2])}"
        lines.append(line)
    # properties the shipped file does not set go after the camera is created
    extra = [f"#py Property,Camera,{k},{v}" for k, v in values.items()]
    extra.append(f"#py Property,Camera,Interval_ms,{interval_ms:g}")
    extra += [f"#py Property,Mirror,Z{j},{v:.6g}" for j, v in enumerate(mirror_rad, start=1) if v]
    extra += [f"#py Property,{VIRTUAL_LIGHTS[k][0]},Power,{v:g}" for k, v in (powers_mw or {}).items()]
    at = max(i for i, ln in enumerate(lines) if ln.startswith("#py Property,Camera,")) + 1
    lines[at:at] = extra
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


# Every light source of the virtual microscope: name -> (.cfg label, wavelength in nm, the
# most it gives, mW). Each run on it declares them all, so the safe state switches every one
# off, whichever the run uses (the simulator's scenes start some of them on).
VIRTUAL_LIGHTS: dict[str, tuple[str, float, float]] = {
    "405": ("Laser405", 405.0, 50.0),
    "488": ("Laser488", 488.0, 100.0),
    "561": ("Laser561", 561.0, 100.0),
    "640": ("Laser640", 640.0, 100.0),
    "lamp": ("Lamp", 550.0, 100.0),
}


def virtual_lights() -> dict[str, dict[str, Any]]:
    """``microscope.lasers`` for the virtual microscope: every light source it has."""
    return {
        name: {"device": device, "wavelength_nm": nm, "max_power_mw": mw}
        for name, (device, nm, mw) in VIRTUAL_LIGHTS.items()
    }


def virtual_microscope_config(cfg_file: Path | str, lasers: Sequence[str]) -> dict[str, Any]:
    """The ``microscope:`` section for the virtual microscope, driven with these lasers (by
    wavelength); every other light source of it is declared too (the safe state's)."""
    unknown = [name for name in lasers if name not in VIRTUAL_LIGHTS]
    if unknown:
        raise InvalidValue(f"the virtual microscope has no laser {unknown}; it has {list(VIRTUAL_LIGHTS)}")
    return {
        "driver": "pymmcore-plus",
        "config_file": str(cfg_file),
        "camera": "Camera",
        "focus": "Z",
        "mirror": "Mirror",
        "lasers": virtual_lights(),
    }


def plt() -> Any:
    """matplotlib's pyplot on the file-only Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as pyplot

    return pyplot


def save_figure(fig: Any, path: Path) -> Path:
    """Lay out, write (PNG, 110 dpi) and close a scenario's figure."""
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt().close(fig)
    return path


def json_safe(d: Mapping[str, Any]) -> dict[str, Any]:
    """NaN becomes null (JSON has no NaN)."""
    return dict(strict_json(d))


def add_to_report(png: Path) -> None:
    """Rewrite the run's report.html with the scenario plot inlined after the loop's own."""
    b64 = base64.b64encode(png.read_bytes()).decode("ascii")
    write_report(png.parent, {f"scenario: {png.stem}": b64})
