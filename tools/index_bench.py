"""Share index benchmark: a million synthetic files in zwalk's index (zwalk/store/index.py), and
the lookups a node answers from it, side by side with the linear scan the index replaced.

Measures, in one run:
  * memory per indexed file (RSS growth while the index is built, and tracemalloc's count of
    what the index's own objects hold, for a sample);
  * exact-name and case-insensitive lookups (median and 99th percentile over many names);
  * glob searches, cold (the first after a change, which builds the block views) and warm, with
    the old linear scan (Query.matches over every entry, as before issue 14) in alternating
    rounds for the ratio;
  * how long the event loop stalls while globs run in a worker thread, as a node runs them
    (a 1 ms ticker on the loop records its worst lateness);
  * the index's copy on disk: writing a million rows and loading them back (a restart).

Nothing here opens a socket. Run: python tools/index_bench.py [--files 1000000] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from zwalk.core import protocol as p  # noqa: E402
from zwalk.core.query import Query, parse_query  # noqa: E402
from zwalk.store.index import FileEntry, Index  # noqa: E402
from zwalk.store.indexdb import IndexDB  # noqa: E402
from zwalk.store.scanner import Root  # noqa: E402

WORDS = ["report", "photo", "song", "backup", "debian", "ubuntu", "holiday", "invoice", "draft",
         "notes", "IMG", "DSC", "Übersicht", "été", "scan"]  # fmt: skip
EXTS = ["iso", "pdf", "jpg", "mp3", "txt", "flac", "mkv", "png", "docx", "tar.gz"]
GLOBS = ["*.iso", "debian-12*.iso", "report-202?.pdf", "IMG-1234*", "*zzz*", "[xyz]*.mkv"]


def rss() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:  # not Linux: tracemalloc's figure stands alone
        return 0


def entries(n: int, seed: int = 1) -> list[FileEntry]:
    rng = random.Random(seed)
    root = "/home/user/share"
    out = []
    for i in range(n):
        word = rng.choice(WORDS)
        name = (
            f"{word}-{rng.randrange(10**7)}{rng.choice(['', '_final', ' (1)'])}.{rng.choice(EXTS)}"
        )
        folder = f"{rng.choice(WORDS).lower()}/{i // 500:05d}"
        size = rng.randrange(1, 1 << 30)
        out.append(
            FileEntry(
                root=root,
                rel=f"share/{folder}/{name}",
                size=size,
                mtime_ns=1_700_000_000_000_000_000 + i * 1_000_000,
                cid=rng.randbytes(32),
                chunk_size=1 << 20,
                hashes=rng.randbytes(32 * min(4, p.chunk_count(size, 1 << 20))),
                ino=1_000_000 + i,
                dev=2049,
            )
        )
    return out


def linear(index_entries: list[FileEntry], query: Query, limit: int) -> list[FileEntry]:
    """The index before issue 14: every entry checked in turn (on the event loop)."""
    out: dict[bytes, FileEntry] = {}
    for e in index_entries:
        if e.cid not in out and query.matches(e.name, e.cid):
            out[e.cid] = e
            if len(out) >= limit:
                break
    return list(out.values())


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t = time.perf_counter()
    r = fn()
    return time.perf_counter() - t, r


async def stall_while(work: Callable[[], Any]) -> tuple[float, float]:
    """Run `work` in a worker thread; the event loop's worst lateness meanwhile, and the time."""
    worst = 0.0
    done = False

    async def ticker() -> None:
        nonlocal worst
        while not done:
            t = time.perf_counter()
            await asyncio.sleep(0.001)
            worst = max(worst, time.perf_counter() - t - 0.001)

    tick = asyncio.create_task(ticker())
    t = time.perf_counter()
    await asyncio.to_thread(work)
    elapsed = time.perf_counter() - t
    done = True
    await tick
    return worst, elapsed


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--files", type=int, default=1_000_000)
    ap.add_argument("--rounds", type=int, default=5, help="alternating rounds per glob")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    n = args.files
    out: dict[str, Any] = {"files": n, "python": sys.version.split()[0]}

    gc.collect()
    before = rss()
    made = entries(n)
    t, index = timed(lambda: Index(made))
    gc.collect()
    built = rss()
    out["build_s"] = round(t, 2)
    index.search(Query(kind=p.QueryKind.GLOB, pattern="*.iso", icase=True))  # the block views
    gc.collect()
    out["memory"] = {  # everything a file costs: its entry, the index's dicts, blocks and views
        "per_file_B": round((built - before) / n),
        "per_file_with_glob_views_B": round((rss() - before) / n),
    }

    rng = random.Random(3)
    names = [e.name for e in rng.sample(made, 10_000)]
    lat = []
    for name in names:
        t, found = timed(lambda name=name: index.search(parse_query(name)))
        if not found:
            raise SystemExit(f"bug: {name!r} is in the index but not found")
        lat.append(t)
    lat_i = []
    for name in names[:2000]:
        t, found = timed(lambda name=name: index.search(parse_query(name.upper(), icase=True)))
        lat_i.append(t)
    qs = sorted(lat)
    out["exact_ms"] = {
        "median": round(statistics.median(lat) * 1e3, 4),
        "p99": round(qs[int(len(qs) * 0.99)] * 1e3, 4),
        "icase_median": round(statistics.median(lat_i) * 1e3, 4),
    }

    globs: dict[str, Any] = {}
    for pattern in GLOBS:
        q = Query(kind=p.QueryKind.GLOB, pattern=pattern, icase=False)
        for block in index._blocks:  # as if every block had changed since the last search
            block.changed()
        cold, hits = timed(lambda q=q: index.search(q))
        index.put(made[0])  # one change: the search after it builds one block's view again
        one, _ = timed(lambda q=q: index.search(q))
        new, old = [], []
        for r in range(args.rounds):
            order = [
                ("new", lambda q=q: index.search(q)),
                ("old", lambda q=q: linear(made, q, p.MAX_HITS)),
            ]
            for label, fn in order if r % 2 == 0 else order[::-1]:
                (new if label == "new" else old).append(timed(fn)[0])
        globs[pattern] = {
            "hits": len(hits),
            "cold_ms": round(cold * 1e3, 1),
            "after_one_change_ms": round(one * 1e3, 1),
            "warm_ms": round(statistics.median(new) * 1e3, 1),
            "linear_ms": round(statistics.median(old) * 1e3, 1),
            "speedup": round(statistics.median(old) / statistics.median(new), 1),
        }
    out["glob"] = globs

    async def stalls() -> dict[str, Any]:
        res = {}
        for pattern in GLOBS:
            q = Query(kind=p.QueryKind.GLOB, pattern=pattern, icase=True)
            for block in index._blocks:  # every view cold: built in the search's thread
                block.changed()
            worst, took = await stall_while(lambda q=q: index.search(q))
            res[pattern + " (icase, all views cold)"] = {
                "loop_worst_stall_ms": round(worst * 1e3, 2),
                "search_ms": round(took * 1e3, 1),
            }
        return res

    out["loop_stall"] = asyncio.run(stalls())

    with tempfile.TemporaryDirectory() as tmp:
        db = IndexDB(Path(tmp) / "index.sqlite")
        db.open()
        t, _ = timed(lambda: [db.write(made[i : i + 5000]) for i in range(0, n, 5000)])
        root = Root(Path("/home/user/share"), "share", "/home/user/share")

        def locate(path: Path) -> tuple[Root, str] | None:
            return root, "share/" + path.relative_to(root.path).as_posix()

        t2, loaded = timed(lambda: sum(len(b) for b in db.load(locate)))
        if loaded != n:
            raise SystemExit(f"bug: {loaded} of {n} rows loaded")
        out["disk_copy"] = {
            "write_s": round(t, 1),
            "load_s": round(t2, 1),
            "bytes_per_file": round((Path(tmp) / "index.sqlite").stat().st_size / n),
        }
        db.close()

    if args.json:
        print(json.dumps(out, indent=2))
    else:
        print(f"{n:,} files; index built in {out['build_s']} s")
        m = out["memory"]
        print(
            f"memory per file: {m['per_file_B']} B (entry and index), "
            f"{m['per_file_with_glob_views_B']} B once globs have built their views"
        )
        e = out["exact_ms"]
        print(
            f"exact name: median {e['median']} ms, p99 {e['p99']} ms; "
            f"-i median {e['icase_median']} ms"
        )
        for pat, g in globs.items():
            print(
                f"glob {pat!r:20} {g['hits']:5} hits  all cold {g['cold_ms']:6} ms  "
                f"one changed {g['after_one_change_ms']:5} ms  warm {g['warm_ms']:5} ms"
                f"  linear {g['linear_ms']:8} ms  ({g['speedup']}x)"
            )
        for pat, s in out["loop_stall"].items():
            print(
                f"loop stall during {pat!r:32} worst {s['loop_worst_stall_ms']} ms "
                f"(search {s['search_ms']} ms)"
            )
        d = out["disk_copy"]
        print(
            f"disk copy: write {d['write_s']} s, load {d['load_s']} s, {d['bytes_per_file']} B/file"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
