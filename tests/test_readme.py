"""README "Using it": every command it shows exists, and each ecosystem section names the
test that exercises it (napari, bioimage.io, SMLM files)."""

from __future__ import annotations

import re
from pathlib import Path

from typer.testing import CliRunner

from smartscope.cli import app

README = Path(__file__).resolve().parents[1] / "README.md"


def _using_it() -> str:
    text = README.read_text(encoding="utf-8")
    start = text.index("## Using it")
    return text[start : text.index("\n## ", start + 1)]


def _command_words(line: str) -> list[str]:
    words = []
    for w in line.split()[1:]:
        if w.startswith(("-", "#", ">", "<")) or re.search(r"[./<]", w):
            break
        words.append(w)
    return words


def test_every_command_in_using_it_exists() -> None:
    blocks = re.findall(r"```bash\n(.*?)```", _using_it(), flags=re.S)
    commands = [
        part.strip()
        for block in blocks
        for line in block.splitlines()
        for part in line.split(";")
        if part.strip().startswith("smartscope")
    ]
    assert len(commands) >= 20
    runner = CliRunner()
    for cmd in commands:
        words = _command_words(cmd)
        res = runner.invoke(app, [*words, "--help"])
        assert res.exit_code == 0, f"{cmd!r}: {res.output}"


def test_ecosystem_sections_name_their_tests() -> None:
    text = _using_it()
    for section, test in (
        ("### napari", "tests/test_napari_plugin.py"),
        ("### bioimage.io", "tests/test_bioimageio.py"),
        ("### SMLM files", "tests/test_smlm_files.py"),
    ):
        body = text[text.index(section) :].split("\n### ")[0]
        assert test in body, section
        assert (README.parent / test).is_file(), test


def test_every_safety_guarantee_names_tests_that_exist() -> None:
    """Each row of the safety table names at least one test, and each named test is there."""
    text = README.read_text(encoding="utf-8")
    start = text.index("## Safety guarantees")
    table = text[start : text.index("\n## ", start + 1)]
    rows = [
        ln for ln in table.splitlines() if ln.startswith("| ") and not ln.startswith(("| guarantee", "|---"))
    ]
    assert len(rows) >= 20
    for row in rows:
        proof = row.rsplit("|", 2)[1]
        refs = re.findall(r"(?:(?:tests/)?(test_\w+\.py))?::(test_\w+)|`(tests/test_\w+\.py)`", proof)
        assert refs, row
        current = ""
        for file, name, whole in refs:
            if whole:
                assert (README.parent / whole).is_file(), whole
                continue
            current = file or current
            assert current, row
            source = (README.parent / "tests" / current).read_text(encoding="utf-8")
            assert re.search(rf"^def {name}\(", source, flags=re.M), f"{current}::{name}"
