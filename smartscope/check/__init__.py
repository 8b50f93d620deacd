"""Commissioning a rig before its first experiment (``smartscope check run.yaml``).

:mod:`.rig` checks what a run configuration names against the hardware and measures the
camera and its buffer; :mod:`.disk` measures the write rate into ``storage.root`` through the
run writer; :mod:`.cli` is the command (a table, ``check.json``, exit status 1 when the run
would fail).
"""

from smartscope.check.disk import WriteRate, measure_write_rate
from smartscope.check.rig import CameraFigures, CheckReport, Finding, Status, check_rig

__all__ = [
    "CameraFigures",
    "CheckReport",
    "Finding",
    "Status",
    "WriteRate",
    "check_rig",
    "measure_write_rate",
]
