"""Where a Micro-Manager configuration's device adapters are found.

The search path is, in order: ``microscope.adapter_paths`` (folders of extra adapters, e.g.
a vendor's), then the installation: ``microscope.mm_path`` or, without it, the one
pymmcore-plus's own discovery picks (``find_micromanager``: ``MICROMANAGER_PATH``, the folder
chosen with ``mmcore use``, ``mmcore install`` folders, then mm-test-adapters and
``/usr/local/lib/Micro-Manager*``). The test adapters (mm-test-adapters: DemoCamera,
Utilities, SequenceTester) are added for the ``demo`` and ``virtual`` configurations, and
when nothing else is found.

Invariant: a ``.cfg`` is read before it is loaded; an adapter it needs that no folder on
the search path holds is one error line naming the adapter, the ``.cfg`` line and every
folder searched, before any device is loaded. Both Micro-Manager flavours (pymmcore-plus and
pycromanager's headless core) load through :func:`load_configuration`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from smartscope.config import MicroscopeConfig
from smartscope.drivers.base import DriverError

__all__ = [
    "AdapterSearch",
    "CfgDevice",
    "adapter_names",
    "adapter_search",
    "cfg_devices",
    "demo_config_path",
    "load_configuration",
    "missing_adapters",
    "mm_test_adapter_path",
    "open_pycromanager_headless",
    "open_pymmcore_plus",
    "resolve_config_file",
]

# Micro-Manager's device-adapter libraries: libmmgr_dal_<Name>.so.0 (Linux), libmmgr_dal_<Name>
# (macOS), mmgr_dal_<Name>.dll (Windows)
_ADAPTER_FILE = re.compile(r"^(?:lib)?mmgr_dal_(?P<name>[^.]+)(?:\.so(?:\.\d+)*|\.dll|\.dylib)?$")
BUILT_IN = ("demo", "virtual")  # configurations that need the test adapters


def mm_test_adapter_path() -> Path:
    """The mm-test-adapters package's adapter folder (DemoCamera, Utilities, SequenceTester)."""
    import mm_test_adapters

    return Path(mm_test_adapters.device_adapter_path())


def demo_config_path() -> Path:
    """Micro-Manager's demo configuration, shipped with the mm-test-adapters package."""
    return mm_test_adapter_path() / "MMConfig_demo.cfg"


def resolve_config_file(name: str) -> Path:
    """Map ``demo`` / ``virtual`` / a path to an existing ``.cfg`` file."""
    if name == "demo":
        return demo_config_path()
    if name == "virtual":
        from smartscope import simulators

        return Path(simulators.virtual_config_path())
    path = Path(name).expanduser()
    if not path.is_file():
        raise DriverError(f"microscope.config_file: {path} does not exist")
    return path


@dataclass(frozen=True, slots=True)
class AdapterSearch:
    """The folders a core searches for device adapters, and where each came from."""

    paths: tuple[Path, ...]
    sources: tuple[str, ...]  # per folder: the setting or the discovery that named it

    def describe(self) -> str:
        return ", ".join(f"{p} ({s})" for p, s in zip(self.paths, self.sources, strict=True)) or "no folder"


def _discovered(find: Callable[[], str | None] | None = None) -> Path | None:
    """The installation pymmcore-plus's discovery picks (None: none compatible)."""
    if find is None:
        from pymmcore_plus import find_micromanager

        find = find_micromanager
    found = find()
    return Path(found) if found else None


def adapter_search(
    microscope: MicroscopeConfig, find: Callable[[], str | None] | None = None
) -> AdapterSearch:
    """The search path for ``microscope`` (see the module doc); ``find`` replaces
    pymmcore-plus's discovery (tests)."""
    entries: list[tuple[Path, str]] = []
    for i, folder in enumerate(microscope.adapter_paths):
        path = Path(folder).expanduser()
        if not path.is_dir():
            raise DriverError(f"microscope.adapter_paths[{i}]: {path} is not a folder")
        entries.append((path, "microscope.adapter_paths"))
    if microscope.mm_path is not None:
        path = Path(microscope.mm_path).expanduser()
        if not path.is_dir():
            raise DriverError(f"microscope.mm_path: {path} is not a folder")
        entries.append((path, "microscope.mm_path"))
    else:
        found = _discovered(find)
        if found is not None and found.resolve() == mm_test_adapter_path().resolve():
            entries.append((found, "mm-test-adapters: pymmcore-plus found no Micro-Manager installation"))
        elif found is not None:
            entries.append((found, "found by pymmcore-plus (MICROMANAGER_PATH, mmcore use/install)"))
    if microscope.config_file in BUILT_IN or not entries:
        entries.append((mm_test_adapter_path(), "mm-test-adapters"))
    seen: set[Path] = set()
    paths: list[Path] = []
    sources: list[str] = []
    for path, source in entries:
        key = path.resolve()
        if key not in seen:
            seen.add(key)
            paths.append(path)
            sources.append(source)
    return AdapterSearch(tuple(paths), tuple(sources))


def adapter_names(folders: Iterable[Path]) -> set[str]:
    """Names of the device adapters (``DemoCamera``, ``HamamatsuHam``, …) in ``folders``."""
    names = set()
    for folder in folders:
        if not Path(folder).is_dir():
            continue
        for entry in Path(folder).iterdir():
            m = _ADAPTER_FILE.match(entry.name)
            if m:
                names.add(m.group("name"))
    return names


@dataclass(frozen=True, slots=True)
class CfgDevice:
    """A ``Device,<label>,<adapter>,<device>`` line of a ``.cfg``."""

    line: int
    label: str
    adapter: str
    device: str


def cfg_devices(text: str) -> list[CfgDevice]:
    """The C++ devices a configuration loads (Python devices, ``#py pyDevice``, need no adapter)."""
    out = []
    for n, raw in enumerate(text.splitlines(), start=1):
        fields = [f.strip() for f in raw.strip().split(",")]
        if len(fields) == 4 and fields[0] == "Device":
            out.append(CfgDevice(n, fields[1], fields[2], fields[3]))
    return out


def missing_adapters(cfg_path: Path, search: AdapterSearch) -> str | None:
    """One line naming each adapter ``cfg_path`` needs that no searched folder holds."""
    try:
        text = cfg_path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise DriverError(f"microscope.config_file: cannot read {cfg_path} ({exc.strerror})") from None
    have = adapter_names(search.paths)
    missing = [d for d in cfg_devices(text) if d.adapter not in have]
    if not missing:
        return None
    needs = "; ".join(f"line {d.line} loads device {d.label!r} from adapter {d.adapter!r}" for d in missing)
    return (
        f"microscope.config_file: {cfg_path}: {needs}, and no folder searched holds "
        f"{'it' if len(missing) == 1 else 'them'}: {search.describe()}. Install Micro-Manager "
        "(or `mmcore install`), or name its folder in microscope.mm_path or microscope.adapter_paths"
    )


def load_configuration(
    microscope: MicroscopeConfig,
    set_paths: Callable[[Sequence[str]], None],
    load: Callable[[str], None],
    find: Callable[[], str | None] | None = None,
) -> tuple[Path, AdapterSearch]:
    """Point a core at the adapters and load the ``.cfg``: ``set_paths`` and ``load`` are the
    core's own calls (either flavour). Returns the ``.cfg`` and the search path used."""
    cfg_path = resolve_config_file(microscope.config_file)
    search = adapter_search(microscope, find)
    problem = missing_adapters(cfg_path, search)
    if problem:
        raise DriverError(problem)
    set_paths([str(p) for p in search.paths])
    try:
        load(str(cfg_path))
    except Exception as exc:
        raise DriverError(
            f"could not load Micro-Manager config {cfg_path} (adapters searched in "
            f"{search.describe()}): {exc}"
        ) from exc
    return cfg_path, search


def open_pymmcore_plus(microscope: MicroscopeConfig, abandon: Callable[[Any], None] | None = None) -> Any:
    """A ``UniMMCore`` (C++ and Python devices, Python autofocus devices included: see
    :mod:`smartscope.simulators.autofocus`) with ``microscope``'s configuration loaded.

    A load that fails or is interrupted (a stop signal) hands the half-loaded core to
    ``abandon`` (a driver's safe state, then the unload: a ``.cfg`` start-up line may already
    have switched a light on); without one the devices are just unloaded."""
    from smartscope.simulators.autofocus import AutofocusUniMMCore

    core = AutofocusUniMMCore()
    try:
        load_configuration(microscope, core.setDeviceAdapterSearchPaths, core.loadSystemConfiguration)
    except BaseException:
        if abandon is None:
            core.unloadAllDevices()
        else:
            abandon(core)
        raise
    return core


def open_pycromanager_headless(
    microscope: MicroscopeConfig, abandon: Callable[[Any], None] | None = None
) -> Any:
    """pycromanager's in-process headless core (pymmcore) with the configuration loaded;
    ``abandon`` as for :func:`open_pymmcore_plus` (it must stop the headless core too)."""
    from pycromanager import Core, start_headless, stop_headless

    search = adapter_search(microscope)
    cfg_path = resolve_config_file(microscope.config_file)
    problem = missing_adapters(cfg_path, search)
    if problem:
        raise DriverError(problem)
    # pycromanager takes one installation folder; the core then gets the whole search path
    start_headless(str(search.paths[0]), None, python_backend=True, buffer_size_mb=microscope.buffer_size_mb)
    core = Core()
    try:
        load_configuration(microscope, core.set_device_adapter_search_paths, core.load_system_configuration)
    except BaseException:
        if abandon is None:
            stop_headless()
        else:
            abandon(core)
        raise
    return core
