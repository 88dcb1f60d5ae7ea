"""The shape of the package: four layers with import rules, no import cycles, small modules,
and mypy --strict over all of it (docs/ARCHITECTURE.md describes the layers)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PKG = ROOT / "zwalk"
MAX_LINES = 425  # "about 400": a module longer than this holds more than one idea

STDLIB = set(sys.stdlib_module_names)
# What each layer may import besides the standard library (zwalk's own layers included).
# core is sans-IO: no event loop, no clock, no sockets, no files, no threads.
CORE_BANNED_STDLIB = {
    "asyncio",
    "socket",
    "selectors",
    "ssl",
    "threading",
    "multiprocessing",
    "concurrent",
    "subprocess",
    "time",
    "os",
    "shutil",
    "tempfile",
    "io",
}
ALLOWED = {
    "core": {"cbor2", "blake3", "zwalk.core"},
    # zmq only for the identity's CurveZMQ key pair (store/identity.py), checked below
    "store": {"cbor2", "blake3", "platformdirs", "zmq", "zwalk.core", "zwalk.store"},
    "net": {
        "cbor2",
        "blake3",
        "zmq",
        "zeroconf",
        "ifaddr",
        "watchfiles",
        "zwalk.core",
        "zwalk.store",
        "zwalk.net",
    },
}


def modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PKG.rglob("*.py")):
        rel = path.relative_to(ROOT).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def imports(path: Path, module: str) -> list[tuple[int, str]]:
    """Every module this one imports, anywhere in it (also inside functions and under
    TYPE_CHECKING: a layer's dependencies are the same whenever they are loaded)."""
    out = []
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            out.append((node.lineno, target))
            # `from zwalk.core import protocol` imports the module zwalk.core.protocol
            for a in node.names:
                out.append((node.lineno, f"{target}.{a.name}"))
    return out


def allowed(layer: str, target: str) -> bool:
    top = target.split(".")[0]
    if top in STDLIB and top != "zwalk":
        return not (layer == "core" and top in CORE_BANNED_STDLIB)
    return any(target == a or target.startswith(a + ".") for a in ALLOWED[layer])


def test_every_layer_imports_only_what_its_rules_allow() -> None:
    mods = modules()
    bad = []
    for name, path in mods.items():
        parts = name.split(".")
        if len(parts) < 3 or parts[1] not in ALLOWED:
            continue  # zwalk/__init__, __main__ and the cli layer may import anything
        layer = parts[1]
        for line, target in imports(path, name):
            if (
                target.startswith("zwalk.")
                and target not in mods
                and target.rsplit(".", 1)[0] in mods
            ):
                continue  # a name imported from a module, not a module
            if not allowed(layer, target):
                bad.append(f"{path.relative_to(ROOT)}:{line}: {layer} imports {target}")
            if layer == "store" and target.split(".")[0] == "zmq" and path.name != "identity.py":
                bad.append(f"{path.relative_to(ROOT)}:{line}: only store/identity.py uses zmq")
    assert not bad, "\n".join(bad)


def test_the_rules_catch_what_they_forbid() -> None:
    assert not allowed("core", "asyncio")
    assert not allowed("core", "zwalk.store.index")
    assert not allowed("core", "zmq")
    assert not allowed("store", "zwalk.net.links")
    assert not allowed("net", "zwalk.cli.app")
    assert allowed("net", "zwalk.store.index") and allowed("core", "dataclasses")


def import_graph() -> dict[str, set[str]]:
    mods = modules()
    graph: dict[str, set[str]] = {name: set() for name in mods}
    for name, path in mods.items():
        for _, target in imports(path, name):
            while target and target not in mods:
                target = target.rpartition(".")[0]
            # a package's own __init__ is not a dependency worth a cycle
            if target and target != name and target.count(".") >= 1:
                graph[name].add(target)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str) -> list[str] | None:
        state[n] = 1
        stack.append(n)
        for m in sorted(graph.get(n, ())):
            if state.get(m) == 1:
                return stack[stack.index(m) :] + [m]
            if m not in state and (c := visit(m)) is not None:
                return c
        stack.pop()
        state[n] = 2
        return None

    for n in sorted(graph):
        if n not in state and (c := visit(n)) is not None:
            return c
    return None


def test_no_import_cycles() -> None:
    graph = import_graph()
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_cycle_check_finds_a_cycle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_module_is_long() -> None:
    long = [
        f"{p.relative_to(ROOT)}: {n} lines"
        for p in PKG.rglob("*.py")
        if (n := len(p.read_text().splitlines())) > MAX_LINES
    ]
    assert not long, "\n".join(long)


def test_the_protocol_namespace_gathers_every_public_name() -> None:
    from zwalk.core import (
        codec,
        control_messages,
        fields,
        limits,
        list_messages,
        messages,
        protocol,
    )

    for mod in (limits, fields, messages, control_messages, list_messages, codec):
        tree = ast.parse(Path(mod.__file__ or "").read_text())
        for node in tree.body:
            names = []
            if isinstance(node, ast.FunctionDef | ast.ClassDef):
                names = [node.name]
            elif isinstance(node, ast.Assign):
                names = [t.id for t in node.targets if isinstance(t, ast.Name)]
            for name in names:
                if not name.startswith("_"):
                    assert getattr(protocol, name, None) is getattr(mod, name), (mod, name)


@pytest.mark.timeout(300)
def test_mypy_strict_passes(tmp_path: Path) -> None:
    """The whole package, core and store included (mypy is in the test extras)."""
    r = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--cache-dir", str(tmp_path), "zwalk"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=280,
    )
    assert r.returncode == 0, r.stdout + r.stderr
