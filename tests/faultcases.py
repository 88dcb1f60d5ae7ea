"""The fault scenarios of tools/fault_*.py as tests: each at the quick scale in the default suite
and at the full scale (the published figures, docs/RELIABILITY.md) under `pytest -m slow`, each
scale with a timeout of its own."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from faultlab import Scale, Scenario

Figures = dict[str, Any]
Check = Callable[[Figures], None]


def cases(scenarios: dict[str, Scenario], *rows: tuple[str, Check, int, int]) -> list[Any]:
    """(scenario, scale, check) for each row (name, check, quick timeout s, full timeout s)."""
    out = []
    for name, check, quick, full in rows:
        scenario = scenarios[name]
        out.append(pytest.param(scenario, "quick", check, id=f"{name}-quick",
                                marks=pytest.mark.timeout(quick)))  # fmt: skip
        out.append(pytest.param(scenario, "full", check, id=f"{name}-full",
                                marks=[pytest.mark.slow, pytest.mark.timeout(full)]))  # fmt: skip
    return out


def run(scenario: Scenario, scale: str) -> Figures:
    figures = scenario(Scale(scale))
    print(scenario.__name__, scale, figures)  # the figures, in the test's output (-rA or -s)
    return figures
