# Logging: quiet on stderr by default, -v/-vv for more, and --log-file to keep records in a file
# (appended, with times and the process id, at least at -v's level), over real processes.
from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from procs import ServeProcess, zwalk_cmd

from zwalk.store.config import ENV_NOT_SETTINGS

RECORD = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} \[(\d+)\] (DEBUG|INFO|WARNING) \S+: ")


@pytest.fixture(autouse=True)
def _no_outer_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """A ZWALK_ setting in the developer's environment must not change what a test sees."""
    for var in list(os.environ):
        if var.startswith("ZWALK_") and not var.startswith(ENV_NOT_SETTINGS):
            monkeypatch.delenv(var)


def zwalk(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        zwalk_cmd(*args), cwd=cwd, capture_output=True, text=True, timeout=60, check=False
    )


def test_log_file_gets_records_with_times_and_stderr_stays_quiet(tmp_path: Path) -> None:
    log = tmp_path / "zwalk.log"
    first = zwalk(tmp_path, "--log-file", str(log), "config")  # before the command name
    assert first.returncode == 0, first.stderr
    assert first.stderr == ""  # the terminal is as quiet as without --log-file
    second = zwalk(tmp_path, "config", "--json", "--log-file", str(log))  # and after it
    assert second.returncode == 0, second.stderr
    records = log.read_text().splitlines()
    assert len(records) == 2, records  # appended, not replaced
    for line in records:
        assert RECORD.match(line), line
        assert " INFO zwalk.config: config file " in line
    assert RECORD.match(records[0])[1] != RECORD.match(records[1])[1]  # type: ignore[index]


def test_verbose_reaches_stderr_and_the_log_file_alike(tmp_path: Path) -> None:
    log = tmp_path / "zwalk.log"
    r = zwalk(tmp_path, "config", "--json", "-v", "--log-file", str(log))
    assert r.returncode == 0, r.stderr
    assert " INFO zwalk.config: config file " in r.stderr  # -v: on stderr too, with times
    assert " INFO zwalk.config: config file " in log.read_text()


def test_serve_logs_what_it_does_into_the_file(
    serve: Callable[..., ServeProcess], tmp_path: Path
) -> None:
    log = tmp_path / "serve.log"
    node = serve("a", {"one.txt": b"1", "two.txt": b"2"}, "--log-file", str(log), "-vv")
    node.stop()
    lines = log.read_text().splitlines()
    assert lines and all(RECORD.match(x) or x.startswith(" ") for x in lines), lines[:5]
    levels = {m[2] for x in lines if (m := RECORD.match(x))}
    assert "DEBUG" in levels, levels  # -vv reaches the file
    assert any(" zwalk.net." in x for x in lines), lines[:10]


def test_an_unwritable_log_file_is_a_usage_error(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("")
    for where in (tmp_path / "missing" / "z.log", tmp_path / "a-file" / "z.log"):
        r = zwalk(tmp_path, "config", "--log-file", str(where))
        assert r.returncode == 2, r.stderr
        assert r.stderr.startswith(f"error: --log-file: cannot write to {where}: "), r.stderr
        assert "Traceback" not in r.stderr and r.stdout == ""
    r = zwalk(tmp_path, "config", "--log-file", str(tmp_path))  # a folder
    assert r.returncode == 2 and "--log-file" in r.stderr and "Traceback" not in r.stderr
