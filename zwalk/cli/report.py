# Result data as people and scripts read it: what `zwalk find` found, fetched and failed, and the
# peer table of `zwalk peers`, each as the JSON document of docs/CLI.md and as text.
from __future__ import annotations

import datetime as dt
import logging
import time
from collections import Counter
from pathlib import Path
from typing import Any

from rich.cells import cell_len
from rich.console import Group
from rich.table import Table
from rich.text import Text

from zwalk.cli.app import App, plural
from zwalk.cli.render import mib_per_s, pad, peer_label
from zwalk.core import protocol as p
from zwalk.core.units import mib
from zwalk.net.download import DownloadResult
from zwalk.net.finder import FindResult
from zwalk.store.downloads import (
    DownloadError,
)

log = logging.getLogger(__name__)


def _holder_report(h: p.Holder) -> dict[str, Any]:
    return {"node": h.node.hex(), "name": h.name, "endpoint": f"{h.host}:{h.port}", "path": h.path}


def hit_report(f: p.FoundFile) -> dict[str, Any]:
    return {
        "name": f.name,
        "size": f.size,
        "cid": p.cid_to_text(f.cid),
        "mtime_ms": f.mtime_ms or None,
        "holders": [_holder_report(h) for h in f.holders],
    }


def local_report(h: p.LocalHit) -> dict[str, Any]:
    return {"name": h.name, "size": h.size, "cid": p.cid_to_text(h.cid), "path": h.path}


def download_report(
    f: p.FoundFile, path: Path, got: DownloadResult | None, note: str = ""
) -> dict[str, Any]:
    """A finished download; `got` is None when an identical file was there already."""
    return {
        "name": f.name,
        "path": str(path.absolute()),
        "cid": p.cid_to_text(f.cid),
        "bytes": f.size,
        "sources": got.sources if got else [],
        "excluded": got.excluded if got else {},
        "seconds": round(got.seconds, 4) if got else 0.0,
        "already_present": got.already_present if got else True,
        "fetched_bytes": got.fetched_bytes if got else 0,
        "resumed_bytes": got.resumed_bytes if got else 0,
        "received_bytes": got.received_bytes if got else 0,
        "end_game_requests": got.duplicate_requests if got else 0,
        "bytes_by_source": got.bytes_by_source if got else {},
        "note": note,
    }


def failure_report(f: p.FoundFile, e: DownloadError) -> dict[str, Any]:
    return {
        "name": f.name,
        "cid": p.cid_to_text(f.cid),
        "bytes": f.size,
        "error": str(e),
        "part": str(e.part.absolute()) if e.part else None,
        "kept_bytes": e.kept,
        "allocated_bytes": e.allocated,
        "changed": e.changed,
    }


def walk_report(r: FindResult) -> dict[str, Any]:
    return {
        "strategy": str(r.strategy),
        "messages": r.messages,
        "hops": r.hops,
        "hops_to_first_hit": r.first_hit_hops,
        "peers_visited": r.visited,
        "peers_known": r.known,
        "coverage": round(min(1.0, r.visited / r.known), 4) if r.known else 0.0,
        "elapsed_ms": round(r.elapsed * 1000, 3),
        "trace": [
            {
                "node": h.node.hex() if h.node else None,
                "name": h.name,
                "latency_ms": round(h.latency_us / 1000, 3),
                "verdict": h.verdict,
                "hits": h.hits,
            }
            for h in r.trace
        ],
    }


USAGE_STATUSES = ("bad-pick", "output-exists")  # the last of `errors` says what to change


def render_find(
    app: App,
    r: dict[str, Any],
    trace: bool,
    *,
    quiet: bool = False,
    listed: bool = False,
    chose: bool = False,
) -> None:
    """Hits on stdout; on stderr the warnings first, the outcome of each download, and (if
    something failed) one error line last, so a failure is what the user sees at the end.
    `quiet`: warnings and errors only; `listed`: the hits were shown already (before asking
    which to fetch, and the user `chose`)."""
    walk = r["walk"]
    if trace and walk:
        for i, hop in enumerate(walk["trace"], 1):
            who = hop["name"] or (hop["node"] or "?")[:12]
            app.info(f"hop {i}: {who} {hop['latency_ms']:.1f} ms {hop['verdict']}")
    shown = {f"{f['name']}: {f['error']}" for f in r["failed"]}  # they get lines of their own
    usage = r["status"] in USAGE_STATUSES
    if usage:
        shown.add(r["errors"][-1])
    for problem in r["errors"]:
        if (r["hits"] or r["local"] or walk["peers_known"]) and problem not in shown:
            app.warn(problem)
    if not r["hits"] and not r["local"]:
        app.error(_not_found(r))
        return
    if not quiet and not listed:
        hit_table(app, r)
    for d in r["downloads"] if not quiet else ():
        app.info(_saved(d))
    attempted = len(r["downloads"]) + len(r["failed"])
    if len(r["hits"]) > 1 and attempted == 1 and not quiet and not chose:
        app.info(
            f"{plural(len(r['hits']) - 1, 'other hit')} listed above: fetch one with --pick N, "
            "or all of them with --all"
        )
    mine = {h["cid"]: h for h in r["local"]}
    best = (r["hits"] or r["local"])[0]
    if best["cid"] in mine and not attempted and not usage and not quiet and not chose:
        app.info(f"you share this already, at {mine[best['cid']]['path']}: nothing to fetch")
    if usage:
        app.error(r["errors"][-1])
    failed = r["failed"]
    if len(failed) > 1:
        for f in failed:
            app.warn(f"{f['name']}: {f['error']}")
    if failed:
        app.error(_failure_line(failed))


def _not_found(r: dict[str, Any]) -> str:
    walk, q = r["walk"], r["query"]
    if walk["peers_known"] == 0:
        if r["errors"]:
            return (
                "no peer answered; tried: "
                + "; ".join(r["errors"])
                + ". Check the address and port, or run `zwalk doctor`"
            )
        how = (
            "the local node knows no live peer"
            if r.get("peers_via") == "local-node"
            else "nothing answered on mDNS"
        )
        return (
            f"no peers found ({how}): is `zwalk serve` running on another machine of this "
            "LAN? Name one with --peer HOST[:PORT], or run `zwalk doctor`"
        )
    asked = f"{walk['peers_visited']} of {plural(walk['peers_known'], 'peer')}"
    hints = []
    if q["kind"] != "cid" and not q["ignore_case"]:
        hints.append("names match case-sensitively: try -i")
    if q["kind"] == "name":
        hints.append(f"or a glob such as '*{q['pattern']}*'")
    hints.append("hidden files (a name starting with '.') and .part files are never shared")
    return f"not found: {q['text']!r} (asked {asked} in {walk['elapsed_ms']:.0f} ms). " + "; ".join(
        hints
    )


def hit_table(app: App, r: dict[str, Any]) -> None:
    """Plain aligned columns, never truncated: content ids must survive copy-paste and pipes.
    Numbered when there is a choice (for --pick)."""
    mine = {h["cid"]: h for h in r["local"]}
    # Versions of one name are told apart by where their first holder keeps them, when that
    # differs (the same path on two nodes says nothing: holders and age tell those apart).
    paths = {id(h): h["holders"][0]["path"] if h["holders"] else h["name"] for h in r["hits"]}
    by_name: dict[str, set[str]] = {}
    for h in r["hits"]:
        by_name.setdefault(h["name"], set()).add(paths[id(h)])
    counts = Counter(h["name"] for h in r["hits"])
    rows = []
    for h in r["hits"]:
        holders = ", ".join(
            peer_label(x["name"], bytes.fromhex(x["node"]), x["endpoint"]) for x in h["holders"]
        )
        if h["cid"] in mine:
            holders += ", and this node"
        n = h["name"]
        shown = paths[id(h)] if counts[n] > 1 and len(by_name[n]) == counts[n] else n
        rows.append((shown, mib(h["size"]), h["cid"], holders))
    seen = {h["cid"] for h in r["hits"]}
    for h in r["local"]:
        if h["cid"] not in seen:
            rows.append((h["name"], mib(h["size"]), h["cid"], f"this node, at {h['path']}"))
    picks = len(r["hits"])  # --pick numbers: the hits from peers; this node's own come after
    numbered = picks > 1
    wn = max(cell_len(x[0]) for x in rows)
    ws = max(len(x[1]) for x in rows)
    for i, (name, size, cid, holders) in enumerate(rows, 1):
        width = len(str(picks))
        number = (f"{i:>{width}}  " if i <= picks else " " * (width + 2)) if numbered else ""
        app.out.print(
            f"{number}{pad(name, wn)}  {size:>{ws}}  {cid}  {holders}",
            highlight=False,
            markup=False,
        )


def _saved(d: dict[str, Any]) -> str:
    if d["already_present"] and not d["fetched_bytes"]:
        return f"already here: {d['path']} ({mib(d['bytes'])}, same content id); nothing fetched"
    where = "saved " + d["path"]
    if d["path"] == "-":  # -o -: written to stdout once the whole file checked out
        where = f"wrote {d['name']} to stdout"
    # the rate of what came over the network this time, not of what a resume found
    rate = d["fetched_bytes"] / d["seconds"] if d["seconds"] > 0 else 0.0
    resumed = (
        f", {mib(d['resumed_bytes'])} of it kept from an earlier attempt"
        if d["resumed_bytes"]
        else ""
    )
    who = ", ".join(s.split(" at ")[0] for s in d["sources"]) or "?"
    note = f" ({d['note']})" if d["note"] else ""
    if not d["sources"]:  # copied from this host's own share
        return f"{where} ({mib(d['bytes'])}, verified){note}"
    return (
        f"{where} ({mib(d['bytes'])}, verified{resumed}) from {who} in "
        f"{d['seconds']:.1f} s, {mib_per_s(rate)}{note}"
    )


def _failure_line(failed: list[dict[str, Any]]) -> str:
    """One line: what failed, why (each source named once), what is kept, how to go on."""
    if len(failed) > 1:
        names = ", ".join(f["name"] for f in failed)
        return f"{len(failed)} downloads failed ({names}); run the same find again to resume them"
    f = failed[0]
    line = f"{f['name']} was not downloaded: {f['error']}."
    if f["part"] and f["kept_bytes"]:
        line += (
            f" {mib(f['kept_bytes'])} of {mib(f['bytes'])} verified and kept in {f['part']}"
            f" ({mib(f['allocated_bytes'])} on disk); run the same find again to resume."
        )
    elif f["part"]:
        line += (
            f" {f['part']} holds nothing verified yet but takes {mib(f['allocated_bytes'])} on"
            " disk; run the same find again to retry, or remove it."
        )
    return line


def peers_report(status: p.StatusOk, via: str) -> dict[str, Any]:
    now_ms = time.time() * 1000

    def iso(ms: int) -> str:
        return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).isoformat(timespec="milliseconds")

    rows = []
    for m in status.members:
        rows.append(
            {
                "node": m.node.hex() if m.node else None,
                "name": m.name,
                "addresses": [m.host],
                "port": m.port,
                "version": m.version,
                "state": m.state,
                "learned": [{"how": x.how, "detail": x.detail} for x in m.learned],
                "first_seen": iso(m.first_seen_ms),
                "last_seen": iso(m.last_seen_ms),
                "age_s": round((now_ms - m.first_seen_ms) / 1000, 3),
                "idle_s": round((now_ms - m.last_seen_ms) / 1000, 3),
                "rtt_ms": None if m.rtt_us is None else round(m.rtt_us / 1000, 3),
                "files": m.files,
            }
        )
    rows.sort(key=lambda r: (r["name"], r["node"] or ""))
    unreachable = [
        {
            "node": f.node.hex() if f.node else None,
            "name": f.name,
            "endpoint": f"{f.host}:{f.port}",
            "learned": [{"how": x.how, "detail": x.detail} for x in f.learned],
            "reason": f.reason,
            "ago_s": round(f.ago_ms / 1000, 3),
        }
        for f in status.failed
    ]
    this = None
    if via == "local-node":
        this = {
            "node": status.node.hex(),
            "name": status.name,
            "files": status.files,
            "bytes": status.bytes,
            "endpoints": [f"{e.host}:{e.port}" for e in status.endpoints],
        }
    return {"via": via, "self": this, "peers": rows, "unreachable": unreachable}


def _peers_table(doc: dict[str, Any], show_all: bool) -> Table:
    via = "the local node" if doc["via"] == "local-node" else "mDNS"
    rows = [r for r in doc["peers"] if show_all or r["state"] == "alive"]
    title = f"{plural(len(rows), 'peer')} (via {via})"
    table = Table(title=title, box=None, header_style="bold", title_justify="left")
    for col, kw in (
        ("node", {"no_wrap": True}),
        ("name", {}),
        ("address", {"no_wrap": True}),
        ("v", {}),
        ("learned", {}),
        ("age", {"justify": "right"}),
        ("seen", {"justify": "right"}),
        ("rtt", {"justify": "right"}),
        ("files", {"justify": "right"}),
    ):
        table.add_column(col, **kw)
    for r in rows:
        # The table names the interface only; --json has the address too.
        learned = ", ".join(
            x["how"] + (f" {x['detail'].split(' (')[0]}" if x["detail"] else "")
            for x in r["learned"]
        )
        table.add_row(
            (r["node"] or "?")[:12],
            r["name"],
            f"{r['addresses'][0]}:{r['port']}",
            str(r["version"] or ""),
            learned,
            _ago(r["age_s"]),
            _ago(r["idle_s"]) + " ago",
            "" if r["rtt_ms"] is None else f"{r['rtt_ms']:.1f} ms",
            str(r["files"]),
        )
    return table


def _ago(seconds: float) -> str:
    s = max(0, int(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def render_peers(app: App, doc: dict[str, Any], show_all: bool) -> Group:
    """The table, then the peers that did not answer, or a hint when there is nothing."""
    parts: list[Any] = []
    alive = [r for r in doc["peers"] if r["state"] == "alive"]
    if alive or (show_all and doc["peers"]):
        parts.append(_peers_table(doc, show_all))
    else:
        where = (
            "the local node knows no live peer"
            if doc["via"] == "local-node"
            else f"nothing answered on mDNS within {app.cfg.discovery_wait:g} s"
        )
        parts.append(Text(f"no peers found: {where}", style="bold"))
    if doc["unreachable"]:
        parts.append(Text("did not answer:", style="yellow"))
        for u in doc["unreachable"]:
            who = f"{u['name']} ({u['node'][:12]}) at " if u["node"] else ""
            parts.append(Text(f"  {who}{u['endpoint']}: {u['reason']}", style="yellow"))
    if not alive:
        parts.append(
            Text(
                "Is `zwalk serve` running on another machine of this LAN? Name one with "
                "--peer HOST[:PORT], or run `zwalk doctor` to see what blocks discovery."
            )
        )
    return Group(*parts)
