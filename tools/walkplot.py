#!/usr/bin/env python3
"""Messages per query against success rate, for every search strategy on both topologies.

Runs tools/walksim.py's simulator over one workload per topology (same seed, so every strategy
faces the same graph, copies and queries) and draws one panel per topology:

  kwalk  16 walkers at TTL 2 .. 1024, and 1 .. 64 walkers at TTL 1024 (check-back every 4 hops)
  flood  TTL 1, 2, ... until every query succeeds (or the flood covers the graph)
  probe  budgets of 10 .. 800 questions to random nodes, and no budget

    python tools/walkplot.py [--nodes 10000] [--queries 300] [--out FILE.png] [--data FILE.json]
    python tools/walkplot.py --replot points.json   # draw again from saved --data
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import walksim  # noqa: E402
from walksim import StrategySpec, WorkloadSpec  # noqa: E402

from zwalk.core.fields import Strategy  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
KWALK_TTLS = (2, 4, 8, 16, 32, 64, 1024)
KWALK_WALKERS = (1, 2, 4, 8, 16, 32, 64)
PROBE_BUDGETS = (10, 25, 50, 100, 200, 400, 800, None)
STYLE = {  # series -> colour, marker, label offset in points (apart, where the series meet)
    "kwalk, 16 walkers, TTL varies": ("tab:blue", "o", (5, -11)),
    "kwalk, TTL 1024, walkers vary": ("tab:green", "^", (-4, 7)),
    "flood, TTL varies": ("tab:red", "s", (5, -12)),
    "probe (random nodes), budget varies": ("tab:gray", "D", (-8, 3)),
}


def point(series: str, label: str, r: dict[str, Any]) -> dict[str, Any]:
    return {
        "series": series,
        "label": label,
        "messages_per_query": r["messages_per_query"],
        "success_rate": r["success_rate"],
    }


def collect(w: walksim.Workload, log: Any) -> list[dict[str, Any]]:
    pts: list[dict[str, Any]] = []

    def run(series: str, label: str, s: StrategySpec) -> dict[str, Any]:
        r = walksim.simulate(w, s)
        pts.append(point(series, label, r))
        log(
            f"  {series:<36} {label:>6}: success {r['success_rate']:.3f}, "
            f"{r['messages_per_query']} messages/query ({r['seconds']} s)"
        )
        return r

    for ttl in KWALK_TTLS:
        run("kwalk, 16 walkers, TTL varies", str(ttl), StrategySpec(Strategy.KWALK, ttl=ttl))
    for k in KWALK_WALKERS:
        run("kwalk, TTL 1024, walkers vary", f"k={k}", StrategySpec(Strategy.KWALK, walkers=k))
    for b in PROBE_BUDGETS:
        label = "all" if b is None else str(b)
        run("probe (random nodes), budget varies", label, StrategySpec(Strategy.PROBE, ttl=b))
    last_reach = -1.0
    for ttl in range(1, w.n + 1):
        r = run("flood, TTL varies", str(ttl), StrategySpec(Strategy.FLOOD, ttl=ttl))
        reach = r["nodes_visited_per_query"]["mean"]
        if r["success_rate"] >= 1.0 or reach == last_reach:
            break
        last_reach = reach
    return pts


def draw(panels: dict[str, dict[str, Any]], out: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        sys.exit("walkplot.py needs matplotlib: pip install matplotlib")
    fig, axes = plt.subplots(1, len(panels), figsize=(6.5 * len(panels), 5.2), squeeze=False)
    for ax, (title, panel) in zip(axes[0], panels.items(), strict=True):
        for series, (colour, marker, offset) in STYLE.items():
            pts = [q for q in panel["points"] if q["series"] == series]
            pts.sort(key=lambda q: q["messages_per_query"])
            if not pts:
                continue
            xs = [q["messages_per_query"] for q in pts]
            ys = [q["success_rate"] for q in pts]
            ax.plot(xs, ys, marker=marker, color=colour, label=series, lw=1.2, ms=5)
            for q in pts:
                ax.annotate(
                    q["label"],
                    (q["messages_per_query"], q["success_rate"]),
                    textcoords="offset points",
                    xytext=offset,
                    ha="left" if offset[0] > 0 else "right",
                    fontsize=6.5,
                    color=colour,
                )
        ax.set_xscale("log")
        ax.set_ylim(-0.02, 1.08)
        ax.set_xlabel("messages per query (query copies + check-backs, log scale)")
        ax.set_ylabel("success rate (queries that found a holder)")
        ax.set_title(title, fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(loc="lower right", fontsize=8)
    fig.suptitle("zwalk search policies in tools/walksim.py: cost against success", fontsize=11)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=130)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--nodes", type=int, default=10_000)
    ap.add_argument("--queries", type=int, default=300)
    ap.add_argument("--objects", type=int, default=100)
    ap.add_argument("--ratio", type=float, default=0.01)
    ap.add_argument("--replication", default="uniform")
    ap.add_argument("--query-dist", default="zipf:1.2")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "walk-messages-vs-success.png")
    ap.add_argument("--data", type=Path, default=None, help="also save the points as JSON here")
    ap.add_argument("--replot", type=Path, default=None, help="draw from saved points, no runs")
    a = ap.parse_args(argv)

    def log(msg: str) -> None:
        print(msg, file=sys.stderr)

    if a.replot:
        panels = json.loads(a.replot.read_text())
    else:
        panels = {}
        for topology in ("powerlaw", "random"):
            spec = WorkloadSpec(
                nodes=a.nodes,
                topology=topology,
                objects=a.objects,
                ratio=a.ratio,
                replication=a.replication,
                queries=a.queries,
                query_dist=a.query_dist,
                seed=a.seed,
            )
            w = walksim.build_workload(spec)
            d = w.describe()
            title = (
                f"{topology}: {d['giant_component']} nodes, mean degree {d['mean_degree']}; "
                f"{a.objects} objects on {a.ratio:.0%} of nodes ({a.replication}),\n"
                f"{a.queries} {a.query_dist} queries, seed {a.seed}"
            )
            log(title.replace("\n", " "))
            panels[title] = {"workload": d, "points": collect(w, log)}
        if a.data:
            a.data.write_text(json.dumps(panels, indent=1))
    draw(panels, a.out)
    log(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
