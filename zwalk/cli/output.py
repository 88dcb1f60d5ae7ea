# Where `zwalk find` puts what it fetches, as far as options say: which of them contradict each
# other (a usage error before anything runs), `-o FILE` checked, and `-o -`'s copy to stdout of
# a file already verified in full (nothing unverified may reach stdout: the chunk hashes are
# proven only by the whole file's BLAKE3).
from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import Any

import click

from zwalk.cli.app import describe
from zwalk.core import protocol as p


def check_options(
    folder: str | None,
    output: str | None,
    force: bool,
    quiet: bool,
    out: Path | None,
    no_download: bool,
    all_: bool,
    pick: int | None,
    ignore_case: bool,
    as_json: bool,
    trace: bool,
) -> None:
    """Options that contradict each other: a usage error (exit 2) before anything runs."""
    clashes = [
        (pick is not None and all_, "--pick fetches one hit and --all every hit: choose one"),
        (output is not None and all_, "-o saves one file and --all fetches every hit"),
        (output is not None and no_download, "-o saves a download and --no-download fetches none"),
        (output is not None and out is not None, "-o says where the file goes: leave out --out"),
        (
            output == "-" and as_json,
            "-o - writes the file to stdout, where --json writes its document: choose one",
        ),  # fmt: skip
        (force and (output is None or output == "-"), "--force applies to -o FILE only"),
        (quiet and trace, "-q hides what --trace shows: choose one"),
        (folder is not None and output is not None, "a folder's files go into --out DIR, not -o"),
        (
            folder is not None and pick is not None,
            "a folder fetch takes every file under it: leave out --pick",
        ),  # fmt: skip
        (
            folder is not None and ignore_case,
            "a folder is named exactly as `zwalk ls` shows it: leave out -i",
        ),  # fmt: skip
    ]
    for clash, why in clashes:
        if clash:
            raise click.UsageError(why)


def output_file(output: str) -> Path:
    """-o FILE, checked: a file name (not a folder) that this platform and zwalk can use."""
    path = Path(output)
    if path.is_dir():
        raise click.BadParameter(
            f"{output} is a folder: -o names a file (--out DIR saves into a folder)",
            param_hint="-o",
        )
    try:
        p.file_name(path.name)
    except p.ProtocolError:
        raise click.BadParameter(
            f"{output!r} does not end in a file name", param_hint="-o"
        ) from None
    return path.absolute()


def write_stdout(report: dict[str, Any]) -> str | None:
    """Copy the verified file (in the private temporary folder) to stdout; what went wrong, if
    anything. A reader that stops early (`| head`) is not an error."""
    d = report["downloads"][0]
    try:
        with open(d["path"], "rb") as src:
            shutil.copyfileobj(src, sys.stdout.buffer, 1 << 20)
        sys.stdout.buffer.flush()
    except BrokenPipeError:
        # Nobody reads any more: keep Python's flush at exit from complaining about it.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except OSError as e:
        return f"cannot write {d['name']} to stdout: {describe(e)}"
    finally:
        d["path"] = "-"
    return None
