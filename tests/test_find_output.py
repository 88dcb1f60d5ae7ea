# Where `zwalk find` puts a file and what it says meanwhile: `-o FILE`, `-o -`, `-q`, and the
# question which hit to fetch on a terminal. Real `zwalk serve` processes (or in-process nodes
# that misbehave) on 127.0.0.1, and real `zwalk find` processes.
from __future__ import annotations

import json
import os
import re
import select
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import blake3
import pytest
from procs import LOOPBACK, ServeProcess, run_zwalk, zwalk_cmd
from test_find_e2e import LyingNode

from zwalk.cli.app import running
from zwalk.cli.prompt import parse_answer
from zwalk.core import protocol as p
from zwalk.net.node import Node
from zwalk.net.router import Router
from zwalk.store import identity
from zwalk.store.config import Config
from zwalk.store.downloads import part_path

Serve = Callable[..., ServeProcess]
MiB = 1 << 20


def find_bytes(cwd: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    """`zwalk find ARGS` on 127.0.0.1 with stdout kept as bytes."""
    return subprocess.run(
        zwalk_cmd("--interface", LOOPBACK, "find", *args),
        cwd=cwd, capture_output=True, timeout=60, check=False, stdin=subprocess.DEVNULL,
    )  # fmt: skip


# --- -o FILE ----------------------------------------------------------------------------------


def test_o_file_saves_exactly_there_and_refuses_other_content_unless_forced(
    serve: Serve, tmp_path: Path
) -> None:
    data = os.urandom(MiB + 4321)
    a = serve("a", {"isos/disk.img": data, "notes.txt": b"notes"})
    work = tmp_path / "work"
    work.mkdir()

    r = run_zwalk("find", "disk.img", "--peer", a.endpoint, "-o", "mine.img", cwd=work)
    assert r.returncode == 0, r.stderr
    assert (work / "mine.img").read_bytes() == data
    assert sorted(x.name for x in work.iterdir()) == ["mine.img"]  # no downloaded/, no .part
    assert "saved " + str(work / "mine.img") in r.stderr

    r = run_zwalk("find", "disk.img", "--peer", a.endpoint, "-o", "mine.img", "--json", cwd=work)
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)["download"]
    assert d["already_present"] and d["fetched_bytes"] == 0
    assert json.loads(r.stdout)["output"] == str(work / "mine.img")

    (work / "other.img").write_bytes(b"something else")
    r = run_zwalk("find", "disk.img", "--peer", a.endpoint, "-o", "other.img", cwd=work)
    assert r.returncode == 2, r.stderr
    assert "holds other content" in r.stderr and "--force" in r.stderr
    assert (work / "other.img").read_bytes() == b"something else"
    assert sorted(x.name for x in work.iterdir()) == ["mine.img", "other.img"]

    r = run_zwalk("find", "disk.img", "--peer", a.endpoint, "-o", "other.img", "--force", cwd=work)
    assert r.returncode == 0, r.stderr
    assert (work / "other.img").read_bytes() == data
    assert sorted(x.name for x in work.iterdir()) == ["mine.img", "other.img"]

    # a folder of that name, and options that contradict -o, are usage errors
    r = run_zwalk("find", "disk.img", "--peer", a.endpoint, "-o", str(work), cwd=work)
    assert r.returncode == 2 and "is a folder" in r.stderr, r.stderr
    for extra in (["--all"], ["--no-download"], ["--out", "x"], ["--json", "-o", "-"]):
        r = run_zwalk("find", "disk.img", "--peer", a.endpoint, "-o", "z.img", *extra, cwd=work)
        assert r.returncode == 2, (extra, r.stderr)
    r = run_zwalk("find", "disk.img", "--peer", a.endpoint, "--force", cwd=work)
    assert r.returncode == 2 and "--force applies to -o FILE" in r.stderr
    assert sorted(x.name for x in work.iterdir()) == ["mine.img", "other.img"]


class HalfRouter(Router):
    """Serves the first chunks of a file, then says it no longer has it."""

    async def respond(self, msg: p.Message, sender: bytes) -> p.Message:
        if isinstance(msg, p.GetChunks) and msg.index + msg.count > 8:
            return p.Error(req=msg.req, code=p.ErrorCode.NOT_FOUND, reason="gone")
        return await super().respond(msg, sender)


class HalfNode(Node):
    Router = HalfRouter


def _node(tmp: Path, name: str, cls: type[Node], data: bytes) -> Node:
    share = tmp / name / "share"
    share.mkdir(parents=True)
    (share / "file.bin").write_bytes(data)
    cfg = Config(
        name=name,
        port=0,
        interfaces=(LOOPBACK,),
        data_dir=tmp / name / "data",
        downloads=tmp / name / "downloaded",
        chunk_size=p.MIN_CHUNK_SIZE,
    )
    return cls(cfg, identity.ephemeral(), shares=[share])


async def _indexed(node: Node, data: bytes) -> None:
    """Wait until the node shares the file (it answers before its index is built)."""
    import asyncio

    cid = blake3.blake3(data).digest()
    for _ in range(200):
        if node.shares.index.by_cid(cid) is not None:
            return
        await asyncio.sleep(0.05)


async def test_o_file_resumes_from_the_part_beside_it(tmp_path: Path) -> None:
    import asyncio

    data = os.urandom(20 * p.MIN_CHUNK_SIZE + 7)
    cid = blake3.blake3(data).digest()
    ini = tmp_path / "small-frames.ini"  # frames of 2 chunks: the first ones arrive
    ini.write_text("[transfer]\nframe_size = 32768\nwindow = 65536\nmax_window = 65536\n")
    work = tmp_path / "work"
    work.mkdir()
    args = ["--config", str(ini), "-o", "got.bin", "--json", "b3:" + cid.hex()]

    async def find(node: Node) -> subprocess.CompletedProcess[bytes]:
        peer = ["--peer", str(node.local.endpoints[0])]
        return await asyncio.to_thread(find_bytes, work, *args, *peer)

    async with running(_node(tmp_path, "half", HalfNode, data)) as half:
        await _indexed(half, data)
        r = await find(half)
    assert r.returncode == 3, r.stderr
    assert not (work / "got.bin").exists()  # never a partial file under its name
    part = part_path(work, "got.bin", cid)
    assert part.exists() and json.loads(r.stdout)["failed"][0]["kept_bytes"] > 0

    async with running(_node(tmp_path, "whole", Node, data)) as whole:
        await _indexed(whole, data)
        r = await find(whole)
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)["download"]
    assert d["resumed_bytes"] >= 8 * p.MIN_CHUNK_SIZE - 2 * p.MIN_CHUNK_SIZE
    assert d["fetched_bytes"] == len(data) - d["resumed_bytes"]
    assert (work / "got.bin").read_bytes() == data
    assert sorted(x.name for x in work.iterdir()) == ["got.bin"]


# --- -o - -------------------------------------------------------------------------------------


def test_o_dash_writes_the_bytes_and_nothing_else_to_stdout(serve: Serve, tmp_path: Path) -> None:
    data = os.urandom(2 * MiB + 99)
    a = serve("a", {"big.bin": data})
    r = find_bytes(tmp_path, "big.bin", "--peer", a.endpoint, "-o", "-")
    assert r.returncode == 0, r.stderr
    assert r.stdout == data
    err = r.stderr.decode()
    assert "big.bin" in err and "wrote big.bin to stdout" in err  # the hits went to stderr
    temp = re.search(r"through (\S+?)\)", err)
    assert temp is not None and not Path(temp.group(1)).exists()  # the private copy is gone
    assert sorted(x.name for x in tmp_path.iterdir()) == ["a"]  # nothing saved here


async def test_o_dash_with_a_lying_holder_leaves_stdout_empty(tmp_path: Path) -> None:
    import asyncio

    data = os.urandom(10 * p.MIN_CHUNK_SIZE + 5)
    async with running(_node(tmp_path, "liar", LyingNode, data)) as liar:
        await _indexed(liar, data)
        peer = str(liar.local.endpoints[0])
        r = await asyncio.to_thread(find_bytes, tmp_path, "file.bin", "--peer", peer, "-o", "-")
    assert r.returncode == 3, r.stderr
    assert r.stdout == b""  # every chunk matched the list, but the list was not the file
    assert "do not add up to the content id" in r.stderr.decode()


# --- -q ---------------------------------------------------------------------------------------


def test_quiet_prints_nothing_on_success_and_only_the_error_on_failure(
    serve: Serve, tmp_path: Path
) -> None:
    a = serve("a", {"one.txt": b"one", "two.txt": b"two"})
    r = run_zwalk("find", "*.txt", "--peer", a.endpoint, "-q", "--out", "dl", cwd=tmp_path)
    assert r.returncode == 0
    assert r.stderr == "" and r.stdout == ""
    assert len(list((tmp_path / "dl").iterdir())) == 1
    r = run_zwalk("find", "three.txt", "--peer", a.endpoint, "-q", cwd=tmp_path)
    assert r.returncode == 1 and r.stdout == ""
    assert r.stderr.startswith("error: not found") and len(r.stderr.splitlines()) == 1


# --- which hit: the question on a terminal ----------------------------------------------------


def test_answers_to_which_hit() -> None:
    assert parse_answer("", 3) == [0]
    assert parse_answer(" 2 ", 3) == [1]
    assert parse_answer("3, 1", 3) == [2, 0]
    assert parse_answer("a", 3) == [0, 1, 2]
    assert parse_answer("q", 3) == []
    assert parse_answer("4", 3) is None and parse_answer("0", 3) is None
    assert parse_answer("x", 3) is None
    assert parse_answer("a", 3, many=False) is None and parse_answer("1 2", 3, many=False) is None


def _on_a_terminal(cwd: Path, args: list[str], answers: list[bytes]) -> tuple[int, str]:
    """Run `zwalk find ARGS` with a pseudo-terminal as stdin, stdout and stderr; answer each
    question with the next of `answers` (then end of input, ^D) and return the exit status and
    everything it printed."""
    import pty

    master, slave = pty.openpty()
    proc = subprocess.Popen(
        zwalk_cmd("--interface", LOOPBACK, "find", *args),
        cwd=cwd, stdin=slave, stdout=slave, stderr=slave, close_fds=True,
    )  # fmt: skip
    os.close(slave)
    seen = b""
    sent = 0
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.5)
            if ready:
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # EIO: every end of the terminal closed
                    break
                if not chunk:
                    break
                seen += chunk
            if seen.count(b"fetch which?") > sent:
                os.write(master, answers[sent] if sent < len(answers) else b"\x04")
                sent += 1
            if proc.poll() is not None and not ready:
                break
        code = proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        os.close(master)
    text = re.sub(r"\x1b\[[0-9;?]*[a-zA-Z]", "", seen.decode(errors="replace"))
    return code, text


@pytest.mark.skipif(sys.platform == "win32", reason="pseudo-terminals are POSIX")
def test_on_a_terminal_find_asks_which_hit_and_fetches_the_one_chosen(
    serve: Serve, tmp_path: Path
) -> None:
    old, new = b"version one", b"version two, newer"
    a = serve("a", {"same.txt": old})
    b = serve("b", {"same.txt": new}, mtimes={"same.txt": 2_000_000_000})
    peers = ["--peer", a.endpoint, "--peer", b.endpoint]
    # 1 is the newer (as many holders each), 2 the older
    code, text = _on_a_terminal(tmp_path, ["same.txt", *peers, "--out", "dl"], [b"x\n", b"2\n"])
    assert code == 0, text
    assert text.count("fetch which?") == 2 and "'x' is not one of the hits" in text, text
    assert re.search(r"^2\s+same\.txt", text, re.M), text
    assert (tmp_path / "dl" / "same.txt").read_bytes() == old
    assert "--pick N" not in text  # the user chose: no hint about the others

    code, text = _on_a_terminal(tmp_path, ["same.txt", *peers, "--out", "dl2"], [b"q\n"])
    assert code == 0 and "fetch which?" in text, text
    assert not (tmp_path / "dl2").exists()
    code, text = _on_a_terminal(tmp_path, ["same.txt", *peers, "--out", "dl3"], [])
    assert code == 0 and "fetch which?" in text, text
    assert not (tmp_path / "dl3").exists()

    # not a terminal (a pipe, a script): no question; the first is fetched
    r = subprocess.run(
        zwalk_cmd("--interface", LOOPBACK, "find", "same.txt", *peers, "--out", "dl4"),
        cwd=tmp_path, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60,
        check=False,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "fetch which?" not in r.stderr + r.stdout
    assert (tmp_path / "dl4" / "same.txt").read_bytes() == new
    # --pick on a terminal: no question either
    code, text = _on_a_terminal(tmp_path, ["same.txt", *peers, "--out", "dl5", "--pick", "2"], [])
    assert code == 0 and "fetch which?" not in text, text
    assert (tmp_path / "dl5" / "same.txt").read_bytes() == old


def test_o_file_of_a_file_this_node_shares_is_copied_from_there(
    serve: Serve, tmp_path: Path
) -> None:
    data = os.urandom(100_000)
    a = serve("a", {"mine.bin": data})
    args = ["mine.bin", "--data-dir", str(a.data_dir)]
    r = run_zwalk("find", *args, "-o", "copy.bin", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "copy.bin").read_bytes() == data
    assert "copied from " + str(a.share / "mine.bin") in r.stderr
    r = find_bytes(tmp_path, *args, "-o", "-")
    assert r.returncode == 0 and r.stdout == data, r.stderr
