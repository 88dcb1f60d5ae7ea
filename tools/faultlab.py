"""Reliability scenarios on the lab: churn, lossy and slow links, a frozen node, load, kills,
a full disk, a start storm and a soak, each bounded in time and reporting figures.

Each scenario lives in a `tools/fault_<area>.py` module as a function in its `SCENARIOS`
table: it takes a `Scale` (`quick` for the test suite, `full` for the figures in
docs/RELIABILITY.md), builds its own lab (tools/netlab.py: network namespaces on a bridge with
no uplink, removed on exit), and returns a dict of figures with at least `"ok"` (did it meet
its target) and `"seconds"`. The tests (tests/test_reliability_*.py) run the quick scale and
assert the targets; this driver runs any of them at either scale and prints the figures.

Run (Linux, root; it makes network namespaces):

    python tools/faultlab.py list
    python tools/faultlab.py run churn frozen --scale full --json
    python tools/faultlab.py run all --scale full --json > reliability.json
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

TOOLS = Path(__file__).resolve().parent
CHECKOUT = TOOLS.parent
sys.path.insert(0, str(TOOLS))
sys.path.insert(0, str(CHECKOUT))
# Every zwalk process a scenario starts runs this checkout, not an installed copy.
os.environ["PYTHONPATH"] = os.pathsep.join(
    dict.fromkeys(
        [str(CHECKOUT), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    )
)

AREAS = ("fault_membership", "fault_transfer", "fault_load")


@dataclass(frozen=True, slots=True)
class Scale:
    name: str  # "quick" (a test, seconds to a minute) or "full" (the published figures)

    @property
    def full(self) -> bool:
        return self.name == "full"


Scenario = Callable[[Scale], dict[str, Any]]


def scenarios() -> dict[str, Scenario]:
    """Every scenario of every area module that exists."""
    out: dict[str, Scenario] = {}
    for area in AREAS:
        try:
            module = importlib.import_module(area)
            out.update(module.SCENARIOS)
        except Exception as e:  # one broken area must not hide the others' scenarios
            print(f"warning: {area}: {type(e).__name__}: {e}", file=sys.stderr)
    return out


def run(names: list[str], scale: Scale) -> dict[str, dict[str, Any]]:
    table = scenarios()
    if names == ["all"]:
        names = list(table)
    unknown = [n for n in names if n not in table]
    if unknown:
        raise SystemExit(f"unknown scenario {', '.join(unknown)}; known: {', '.join(table)}")
    results: dict[str, dict[str, Any]] = {}
    for name in names:
        started = time.monotonic()
        print(f"# {name} ({scale.name}) ...", file=sys.stderr, flush=True)
        try:
            figures = table[name](scale)
        except Exception as e:  # one scenario's failure must not hide the others' figures
            figures = {"ok": False, "error": f"{type(e).__name__}: {e}"}
        figures.setdefault("seconds", round(time.monotonic() - started, 1))
        results[name] = figures
        print(f"# {name}: {'ok' if figures.get('ok') else 'FAILED'}", file=sys.stderr, flush=True)
    return results


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("list", help="the scenarios there are")
    r = sub.add_parser("run", help="run scenarios and print their figures")
    r.add_argument("names", nargs="+", help="scenario names, or all")
    r.add_argument("--scale", choices=("quick", "full"), default="quick")
    r.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    if args.cmd == "list":
        for name, fn in scenarios().items():
            print(f"{name:16} {(fn.__doc__ or '').strip().splitlines()[0]}")
        return 0
    if sys.platform != "linux" or os.geteuid() != 0:
        raise SystemExit("the lab needs Linux and root (network namespaces)")
    results = run(args.names, Scale(args.scale))
    if args.json:
        print(json.dumps({"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                          "scale": args.scale, "results": results}, indent=2))  # fmt: skip
    else:
        for name, figures in results.items():
            print(f"{name}: " + ", ".join(f"{k}={v}" for k, v in figures.items()))
    return 0 if all(f.get("ok") for f in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
