"""``--help`` of every command reads cleanly in an 80-column terminal: no option name cut,
no sentence broken mid-line (``smartscope.errors.command_app``: click's plain help layout)."""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from smartscope.cli import app

WIDTH = 80
_ITEM = re.compile(r"^(?:[-*•]|\d+[.)])\s")


def _commands(cmd: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    """Every command under ``cmd`` (typer's own click: groups duck-typed)."""
    yield path, cmd
    if hasattr(cmd, "list_commands"):
        ctx = cmd.context_class(cmd)
        for name in cmd.list_commands(ctx):
            sub = cmd.get_command(ctx, name)
            if sub is not None and not sub.hidden:
                yield from _commands(sub, (*path, name))


ALL = list(_commands(typer.main.get_command(app)))


def test_the_cli_tree_is_walked() -> None:
    names = {" ".join(p) for p, _ in ALL}
    assert {"run", "check", "train smlm", "calibrate camera", "localize", "engines"} <= names, sorted(names)


@pytest.mark.parametrize(("path", "cmd"), ALL, ids=[" ".join(p) or "smartscope" for p, _ in ALL])
def test_help_reads_cleanly_at_80_columns(path: tuple[str, ...], cmd: Any) -> None:
    res = CliRunner().invoke(
        app, [*path, "--help"], env={"COLUMNS": str(WIDTH), "TERMINAL_WIDTH": str(WIDTH)}
    )
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    assert max(len(ln) for ln in lines) <= WIDTH
    for param in cmd.params:  # every shown option's names in full
        if getattr(param, "hidden", False):
            continue
        for name in param.opts:
            if name.startswith("--"):
                assert name in res.output, f"{' '.join(path)}: {name} is cut at {WIDTH} columns"
    # the description (up to the first section): a line well short of the width continues
    # no sentence onto the next line, unless the next line starts a list item
    desc = []
    for ln in lines[1:]:  # after "Usage: ..."
        if re.match(r"^(Arguments|Options|Commands):", ln):
            break
        desc.append(ln.strip())
    for here, after in itertools.pairwise(desc):
        if here and after and not _ITEM.match(after):
            assert len(here) >= WIDTH - 30, (
                f"{' '.join(path)}: a sentence broken mid-line: {here!r} / {after!r}"
            )


def test_localize_keeps_the_hidden_old_name_of_camera_file(tmp_path: Path) -> None:
    """--calibration is hidden from --help (its joined name was cut at 80 columns) but still
    taken; given with a different --camera-file it is refused in one line."""
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    res = CliRunner().invoke(
        app,
        [
            "localize",
            str(tmp_path / "x.tif"),
            "--out",
            str(tmp_path / "o"),
            "--calibration",
            str(a),
            "--camera-file",
            str(b),
        ],
    )
    assert res.exit_code == 1 and "--calibration is the old name of --camera-file" in res.output, res.output
    help_text = CliRunner().invoke(app, ["localize", "--help"], env={"COLUMNS": "80"}).output
    assert "--camera-file" in help_text and "--calibration" not in help_text
