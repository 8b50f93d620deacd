"""The training options every ``smartscope train <family>`` command shares, as ``Annotated``
aliases: one name, type and help text each; a command keeps its own default.

Used as ``steps: StepsOption = 400``. Imported only by command-line modules.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

__all__ = [
    "BaseWidthOption",
    "BatchSizeOption",
    "BundleOutOption",
    "DepthOption",
    "DeviceOption",
    "FieldPxOption",
    "NFieldsOption",
    "OverlapPxOption",
    "PatchPxOption",
    "PatienceOption",
    "QuietOption",
    "SeedOption",
    "StepsOption",
    "ThreadsOption",
    "TilePxOption",
    "ValEveryOption",
    "ValFractionOption",
]

BundleOutOption = Annotated[Path, typer.Option("--out", "-o", help="bundle folder (or .zip) to write")]
NFieldsOption = Annotated[int, typer.Option(help="simulated fields of view")]
FieldPxOption = Annotated[int, typer.Option(help="simulated field edge, px")]
StepsOption = Annotated[int, typer.Option(help="maximum optimiser steps")]
BatchSizeOption = Annotated[int, typer.Option()]
PatchPxOption = Annotated[int, typer.Option(help="training patch edge, px")]
DepthOption = Annotated[int, typer.Option(help="U-Net depth")]
BaseWidthOption = Annotated[int, typer.Option(help="U-Net first-level channels")]
ValFractionOption = Annotated[float, typer.Option(help="fields of view held out")]
ValEveryOption = Annotated[int, typer.Option(help="validate every N steps")]
PatienceOption = Annotated[int, typer.Option(help="early-stopping patience (validations)")]
TilePxOption = Annotated[int, typer.Option(help="inference tile edge stored in the bundle")]
OverlapPxOption = Annotated[int, typer.Option(help="inference tile overlap")]
SeedOption = Annotated[int, typer.Option()]
DeviceOption = Annotated[str, typer.Option(help="cpu, cuda, cuda:0 ...")]
ThreadsOption = Annotated[int, typer.Option(help="torch CPU threads (0: default)")]
QuietOption = Annotated[bool, typer.Option(help="no progress bar")]
