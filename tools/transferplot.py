#!/usr/bin/env python3
"""Chart of the transfer benchmarks: throughput of zwalk, http.server + curl and raw sendfile
on loopback (tools/transfer_bench.py --json, one or more runs, e.g. under different memory
conditions), and of one source against N in the lab (tools/transfer_lab_bench.py --json).
Needs matplotlib.

    python tools/transferplot.py --loopback default.json --loopback settle.json \
        --loopback prealloc.json --lab lab.json --out docs/transfer.png
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--loopback",
        type=Path,
        action="append",
        required=True,
        help="transfer_bench.py --json output (repeat for several runs)",
    )
    ap.add_argument("--lab", type=Path, required=True, help="transfer_lab_bench.py --json output")
    ap.add_argument("--out", type=Path, default=Path("docs/transfer.png"))
    args = ap.parse_args()
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        sys.exit("transferplot.py needs matplotlib: pip install matplotlib")
    loops = [json.loads(path.read_text()) for path in args.loopback]
    lab = json.loads(args.lab.read_text())
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4.2), gridspec_kw={"width_ratios": [3, 2]})
    names = ("sendfile", "curl", "zwalk", "zwalk find")
    labels = {
        "sendfile": "raw TCP sendfile",
        "curl": "http.server + curl",
        "zwalk": "zwalk download",
        "zwalk find": "zwalk find (whole)",
    }
    colors = {"sendfile": "#999", "curl": "#777", "zwalk": "#2a6", "zwalk find": "#195"}
    width = 0.8 / len(names)
    for k, name in enumerate(names):
        at = [i for i, loop in enumerate(loops) if name in loop["gb_per_s"]]  # --only runs
        if not at:
            continue
        xs = [i + (k - (len(names) - 1) / 2) * width for i in at]
        ys = [loops[i]["gb_per_s"][name] for i in at]
        bars = a.bar(xs, ys, width, label=labels[name], color=colors[name])
        a.bar_label(bars, fmt="%.2f", fontsize=7)
    a.set_xticks(range(len(loops)), [_condition(loop) for loop in loops])
    a.set_ylabel("GB/s")
    a.legend(fontsize=8)
    gib = loops[0]["bytes"] / 2**30
    rounds = "/".join(str(loop["rounds"]) for loop in loops)
    a.set_title(f"{gib:g} GiB over 127.0.0.1, tmpfs (median of {rounds} rounds)")
    srcs = sorted(lab["mb_per_s"], key=int)
    bars = b.bar(
        [f"{s} source{'s' if s != '1' else ''}" for s in srcs],
        [lab["mb_per_s"][s] for s in srcs],
        color="#2a6",
    )
    b.bar_label(bars, fmt="%.1f")
    b.set_ylabel("MB/s")
    b.set_title(f"lab, each source at {lab['rate']}: {lab['ratio']:.2f}x")
    fig.tight_layout()
    fig.savefig(args.out, dpi=100)
    print(f"wrote {args.out}")
    return 0


def _condition(loop: dict[str, object]) -> str:
    cond = loop.get("conditions") or {}
    assert isinstance(cond, dict)  # noqa: S101 - our own JSON
    if cond.get("preallocate"):
        return "destination written\nbeforehand"
    if cond.get("settle_s"):
        return f"{cond['settle_s']:g} s settle\nbefore each run"
    return "runs back to back\n(default)"


if __name__ == "__main__":
    raise SystemExit(main())
