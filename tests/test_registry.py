"""Registry completeness: every config kind has a builder, drivers are built from a table,
and every frozen model derives from the one frozen base."""

from __future__ import annotations

import importlib
import inspect
import re
import sys
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel

from smartscope.base_model import FrozenModel
from smartscope.config.controllers import ControllerConfig
from smartscope.config.microscope import MicroscopeConfig
from smartscope.config.stages import StageConfig
from smartscope.drivers import DRIVER_BUILDERS
from smartscope.registry import CONTROLLER_BUILDERS, STAGE_BUILDERS

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
from layout import ROOT, source_modules


def _members(union: Any) -> list[type]:
    """The classes of an ``Annotated[A | B | ..., Field(discriminator=...)]`` union."""
    (inner, *_) = get_args(union)  # strips Annotated
    assert get_origin(inner) in (Union, type(int | str)), inner
    return list(get_args(inner))


def _kind(cls: type[BaseModel]) -> str:
    (kind,) = get_args(cls.model_fields["kind"].annotation)
    return str(kind)


def test_every_stage_kind_has_a_builder() -> None:
    members = _members(StageConfig)
    assert set(members) == set(STAGE_BUILDERS), "StageConfig and STAGE_BUILDERS disagree"
    kinds = [_kind(c) for c in members]
    assert len(set(kinds)) == len(kinds) and "identity" in kinds  # kinds tell the variants apart


def test_every_controller_kind_has_a_builder() -> None:
    members = _members(ControllerConfig)
    assert set(members) == set(CONTROLLER_BUILDERS), "ControllerConfig and CONTROLLER_BUILDERS disagree"
    kinds = [_kind(c) for c in members]
    assert len(set(kinds)) == len(kinds) and "exposure_band" in kinds


def test_drivers_are_built_from_a_table() -> None:
    annotation = MicroscopeConfig.model_fields["driver"].annotation
    assert get_origin(annotation) is Literal
    assert set(get_args(annotation)) == set(DRIVER_BUILDERS) == {"pymmcore-plus", "pycromanager", "replay"}
    assert all(callable(b) for b in DRIVER_BUILDERS.values())


# models whose helpers are mid-change elsewhere (the SMLM network's config: SMLM calibration work)
NOT_YET = {"smartscope/engines/networks/smlm.py"}


def test_there_is_one_frozen_base() -> None:
    # in the source: only the base itself says frozen=True on a pydantic model
    says_frozen = {
        path.relative_to(ROOT).as_posix()
        for _, path in source_modules()
        if re.search(r"ConfigDict\([^)]*frozen=True", path.read_text(encoding="utf-8"))
    }
    assert says_frozen - NOT_YET == {"smartscope/base_model.py"}, sorted(says_frozen)
    # at run time: every frozen model of the project derives from it
    loose, frozen = [], 0
    for name, path in source_modules():
        if name.startswith("smartscope.napari_plugin") or path.relative_to(ROOT).as_posix() in NOT_YET:
            continue  # napari's Qt stack stays out of the test process
        module = importlib.import_module(name)
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if issubclass(cls, BaseModel) and cls.__module__ == name and cls.model_config.get("frozen"):
                frozen += 1
                if not issubclass(cls, FrozenModel):
                    loose.append(f"{name}.{cls.__qualname__}")
    assert loose == [] and frozen > 50  # configs, actions, manifests, networks, simulator settings
