#!/usr/bin/env python3
"""Chart of the transfer benchmarks: throughput of zwalk, http.server + curl and raw sendfile
on loopback (tools/transfer_bench.py --json), and of one source against N in the lab
(tools/transfer_lab_bench.py --json). Needs matplotlib.

    python tools/transferplot.py --loopback bench.json --lab lab.json --out docs/transfer.png
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--loopback", type=Path, required=True, help="transfer_bench.py --json output")
    ap.add_argument("--lab", type=Path, required=True, help="transfer_lab_bench.py --json output")
    ap.add_argument("--out", type=Path, default=Path("docs/transfer.png"))
    args = ap.parse_args()
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        sys.exit("transferplot.py needs matplotlib: pip install matplotlib")
    loop = json.loads(args.loopback.read_text())
    lab = json.loads(args.lab.read_text())
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4), gridspec_kw={"width_ratios": [3, 2]})
    names = [n for n in ("sendfile", "curl", "zwalk", "zwalk find") if n in loop["gb_per_s"]]
    values = [loop["gb_per_s"][n] for n in names]
    labels = {
        "sendfile": "raw TCP\nsendfile",
        "curl": "http.server\n+ curl",
        "zwalk": "zwalk\ndownload",
        "zwalk find": "zwalk find\n(whole)",
    }
    bars = a.bar([labels[n] for n in names], values, color=["#999", "#777", "#2a6", "#195"])
    a.bar_label(bars, fmt="%.2f")
    a.set_ylabel("GB/s")
    gib = loop["bytes"] / 2**30
    a.set_title(f"{gib:g} GiB over 127.0.0.1, tmpfs (median of {loop['rounds']})")
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


if __name__ == "__main__":
    raise SystemExit(main())
