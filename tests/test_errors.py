"""The error taxonomy: a user's mistake is a ``UserError`` and one line; anything else, a
builtin ``ValueError`` from a numpy shape check included, is a bug whose line points at the
log that holds its traceback (a run's ``run.log`` when it ended a run)."""

from __future__ import annotations

import errno
import importlib
import inspect
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import typer
import yaml
from pydantic import BaseModel
from typer.testing import CliRunner

from smartscope.errors import BUG, FormattedErrors, describe, report_bug
from smartscope.exceptions import InvalidValue, SmartscopeError, UserError, fail, log_of
from tests.conftest import cfg_dict

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
from layout import source_modules


def _numpy_bug() -> None:
    np.zeros(3).reshape(2, 2)  # ValueError: cannot reshape array of size 3 into shape (2,2)


def _user_mistake() -> None:
    fail("--frames: -5 is not a number of frames")


def _invalid_value() -> None:
    raise InvalidValue("exposure_ms: -1 must be positive")


def _missing_file() -> None:
    open("/nonexistent/smartscope/run.yaml")  # noqa: SIM115 - the builtin's own error


def _bad_field() -> None:
    class Acq(BaseModel):
        n_frames: int

    Acq(n_frames="many")  # type: ignore[arg-type]


def _key_bug() -> None:
    {}["frames_stored"]


def _json_bug() -> None:
    json.loads("{not json")  # a JSONDecodeError is a ValueError; unwrapped, it is a bug


def _yaml_bug() -> None:
    yaml.safe_load("a: [1,")


def _disk_full() -> None:
    raise OSError(errno.ENOSPC, "No space left on device", "/data/runs/raw.ome.tif")


def _io_bug() -> None:
    raise OSError(errno.EBADF, "Bad file descriptor")  # a descriptor closed under us: a bug


def _runtime_bug() -> None:
    raise RuntimeError("the writer thread is not running")


# (what raises, a user's mistake?, words in its line)
CASES: list[tuple[Any, bool, str]] = [
    (_user_mistake, True, "--frames: -5 is not a number of frames"),
    (_invalid_value, True, "exposure_ms: -1 must be positive"),
    (_missing_file, True, "/nonexistent/smartscope/run.yaml: No such file or directory"),
    (_bad_field, True, "n_frames: Input should be a valid integer"),
    (_numpy_bug, False, "cannot reshape array of size 3"),
    (_key_bug, False, "frames_stored"),
    (_json_bug, False, "Expecting property name"),
    (_yaml_bug, False, "while parsing a flow node"),
    (_disk_full, True, "/data/runs/raw.ome.tif: No space left on device"),
    (_io_bug, False, "Bad file descriptor"),
    (_runtime_bug, False, "the writer thread is not running"),
]


def _raised(fn: Any) -> BaseException:
    with pytest.raises(Exception) as info:
        fn()
    return info.value


@pytest.mark.parametrize(("fn", "user", "words"), CASES, ids=[c[0].__name__ for c in CASES])
def test_describe_tells_a_users_mistake_from_a_bug(fn: Any, user: bool, words: str) -> None:
    exc = _raised(fn)
    line = describe(exc)
    if user:
        assert line is not None and words in line and "\n" not in line
    else:
        assert line is None, f"{type(exc).__name__} shown as a user's mistake: {line}"


def _app(fn: Any) -> typer.Typer:
    app = typer.Typer(cls=FormattedErrors, pretty_exceptions_enable=False)
    app.command("go")(fn)
    app.command("other")(lambda: None)  # two commands: `go` is a subcommand, as in smartscope
    return app


@pytest.mark.parametrize(("fn", "user", "words"), CASES, ids=[c[0].__name__ for c in CASES])
def test_the_command_line_prints_one_line_either_way(fn: Any, user: bool, words: str) -> None:
    res = CliRunner().invoke(_app(fn), ["go"])
    errors = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(errors) == 1 and errors[0].startswith("error: "), res.output
    assert words in errors[0]
    assert "Traceback" not in res.output
    if user:
        assert res.exit_code == (1 if fn is _user_mistake else 2)  # fail's code, else a usage error's
        assert BUG not in errors[0]
    else:
        assert res.exit_code == 1
        assert errors[0].startswith(f"error: {BUG} (a bug, not your input): ")
        log = Path(errors[0].rsplit("the traceback is in ", 1)[1])
        text = log.read_text(encoding="utf-8")
        assert text.startswith("Traceback") and fn.__name__ in text  # the whole traceback
        log.unlink()


def test_fail_is_a_user_error_with_the_exit_status_asked() -> None:
    for code in (1, 2):
        exc = _raised(lambda code=code: fail("nope", code))
        assert isinstance(exc, UserError) and exc.exit_code == code and describe(exc) == "nope"
        assert CliRunner().invoke(_app(lambda code=code: fail("nope", code)), ["go"]).exit_code == code


def _project_exceptions() -> list[type[BaseException]]:
    found: dict[str, type[BaseException]] = {}
    for name, _ in source_modules():
        if name.startswith("smartscope.napari_plugin"):
            continue  # napari's Qt stack stays out of the test process (it defines no exception)
        module = importlib.import_module(name)
        for _, obj in inspect.getmembers(module, inspect.isclass):
            if issubclass(obj, BaseException) and obj.__module__ == name:
                found[f"{name}.{obj.__qualname__}"] = obj
    return list(found.values())


def test_every_project_exception_is_a_smartscope_error() -> None:
    from smartscope.signals import Interrupted

    classes = _project_exceptions()
    names = {c.__name__ for c in classes}
    assert {"ConfigError", "BundleError", "DriverError", "StageError", "QueueFull", "FrameError"} <= names
    # a stop signal is a KeyboardInterrupt, never an Exception that `except Exception` swallows
    strays = [c for c in classes if not issubclass(c, SmartscopeError) and c is not Interrupted]
    assert strays == []


def test_a_bug_that_ends_a_run_is_in_its_run_log(tmp_path: Path) -> None:
    from smartscope.config import validate_config
    from smartscope.runner import run

    cfg = validate_config(cfg_dict(tmp_path, acquisition={"n_frames": 5, "exposure_ms": 2.0}), "test")

    def bug_in_the_loop(loop: Any) -> None:  # the run's metrics hit a numpy shape bug
        setattr(loop, "metrics", lambda *a: _numpy_bug())  # noqa: B010

    with pytest.raises(ValueError, match="cannot reshape") as info:
        run(cfg, on_loop=bug_in_the_loop, report=False)
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert log_of(info.value) == run_dir / "run.log"
    text = (run_dir / "run.log").read_text(encoding="utf-8")
    assert "the run stopped on an error" in text and "Traceback" in text and "_numpy_bug" in text
    assert describe(info.value) is None
    assert report_bug(info.value).endswith(f"the traceback is in {run_dir / 'run.log'}")
    assert (run_dir / "frames.jsonl").exists()  # what was acquired is kept
