# Packaging: the sdist and the wheel built from this checkout hold the whole package, its
# metadata and its entry point, and the wheel installed on its own runs `zwalk --version` and
# `zwalk demo` with nothing of the checkout on the path. The suite may run in a network namespace
# with no route out, so the build is offline (--no-isolation: `build` and the setuptools that
# [build-system] asks for come with the test extras) and the install takes no dependencies (they
# are this venv's). .ci/run does the same with the network: a fresh venv, dependencies from the
# registry.
from __future__ import annotations

import configparser
import email.parser
import importlib.util
import os
import shutil
import subprocess
import sys
import tarfile
import tomllib
import zipfile
from dataclasses import dataclass
from email.message import Message
from pathlib import Path

import pytest

CHECKOUT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((CHECKOUT / "pyproject.toml").read_text(encoding="utf-8"))
PROJECT = PYPROJECT["project"]
# What the checkout holds that a build must not see: VCS data, build leftovers (a stale
# zwalk.egg-info/SOURCES.txt would add files to the sdist), caches, virtual environments.
NOT_SOURCE = shutil.ignore_patterns(
    ".git",
    "build",
    "dist",
    "*.egg-info",
    "__pycache__",
    "*.py[cod]",
    ".*_cache",
    ".hypothesis",
    ".venv",
    "venv",
    ".coverage*",
    "downloaded",
)


@dataclass(frozen=True)
class Built:
    sdist: Path
    wheel: Path


def _env(**extra: str) -> dict[str, str]:
    """This process's environment without what would follow a child around: coverage's
    start-up hook (a build or an installed copy of zwalk must not write coverage data for
    files that are gone afterwards) and conftest's PYTHONPATH (the checkout)."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("COVERAGE_PROCESS_") and k != "PYTHONPATH"
    }
    return {**env, **extra}


def _run(*args: str | Path, cwd: Path, timeout: float, **env: str) -> str:
    r = subprocess.run(
        [str(a) for a in args],
        cwd=cwd,
        env=_env(**env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert r.returncode == 0, f"{args} exited with {r.returncode}:\n{r.stdout}\n{r.stderr}"
    return r.stdout + r.stderr


def _modules() -> list[str]:
    """Every module of the zwalk package in this checkout, as 'zwalk/cli/app.py'."""
    return sorted((p.relative_to(CHECKOUT).as_posix()) for p in (CHECKOUT / "zwalk").rglob("*.py"))


def _runtime_requirements(meta: Message) -> set[str]:
    """Requires-Dist lines that hold without an extra."""
    return {r.replace(" ", "") for r in meta.get_all("Requires-Dist", []) if "extra ==" not in r}


def _declared_requirements() -> set[str]:
    return {r.replace(" ", "") for r in PROJECT["dependencies"]}


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    """The sdist, and the wheel built from that sdist (as `python -m build` does by default, so
    the sdist is proven complete), from a copy of this checkout's files: a build writes into
    its source folder, which other tests and people are using."""
    if importlib.util.find_spec("build") is None:
        pytest.fail("the build front end is not installed: pip install -e '.[test]'")
    src = tmp_path_factory.mktemp("src") / "zwalk"
    shutil.copytree(CHECKOUT, src, ignore=NOT_SOURCE)
    out = tmp_path_factory.mktemp("dist")
    _run(
        sys.executable, "-m", "build", "--no-isolation", "--outdir", out, src, cwd=src, timeout=300
    )
    (sdist,) = out.glob("*.tar.gz")
    (wheel,) = out.glob("*.whl")
    return Built(sdist, wheel)


@pytest.mark.timeout(360)
def test_the_wheel_holds_the_package_its_metadata_and_the_command(built: Built) -> None:
    with zipfile.ZipFile(built.wheel) as whl:
        names = set(whl.namelist())
        info = f"zwalk-{PROJECT['version']}.dist-info"
        meta = email.parser.Parser().parsestr(whl.read(f"{info}/METADATA").decode())
        entry_points = configparser.ConfigParser()
        entry_points.read_string(whl.read(f"{info}/entry_points.txt").decode())
    missing = [m for m in _modules() if m not in names]
    assert not missing, f"modules left out of the wheel: {missing}"
    # Nothing but the package and its metadata: no tests, tools or docs installed.
    assert {n.split("/")[0] for n in names} == {"zwalk", info}
    assert meta["Name"] == "zwalk" and meta["Version"] == PROJECT["version"]
    assert meta["Requires-Python"] == PROJECT["requires-python"]
    assert meta["License-Expression"] == PROJECT["license"]
    assert _runtime_requirements(meta) == _declared_requirements()
    assert any(r.startswith("watchfiles") for r in _runtime_requirements(meta))
    assert meta["Description-Content-Type"] == "text/markdown"
    readme = (CHECKOUT / "README.md").read_text(encoding="utf-8")
    assert meta.get_payload().strip() == readme.strip()  # the README is the long description
    assert dict(entry_points["console_scripts"]) == {"zwalk": "zwalk.cli.main:main"}


@pytest.mark.timeout(360)
def test_the_sdist_holds_the_source_the_docs_and_the_tests(built: Built) -> None:
    top = f"zwalk-{PROJECT['version']}"
    with tarfile.open(built.sdist) as sdist:
        names = {n.removeprefix(f"{top}/") for n in sdist.getnames()}
        meta = email.parser.Parser().parsestr(
            sdist.extractfile(f"{top}/PKG-INFO").read().decode()  # type: ignore
        )
    missing = [m for m in _modules() if m not in names]
    assert not missing, f"modules left out of the sdist: {missing}"
    # What README.md links to, and a test suite that runs from the unpacked sdist (MANIFEST.in).
    wanted = ["README.md", "pyproject.toml", "config.example.ini", "tests/conftest.py"]
    wanted += [f"docs/{p.name}" for p in (CHECKOUT / "docs").glob("*.md")]
    wanted += [f"tests/{p.name}" for p in (CHECKOUT / "tests").glob("*.py")]
    wanted += [f"tools/{p.name}" for p in (CHECKOUT / "tools").glob("*.py")]
    left_out = [w for w in wanted if w not in names]
    assert not left_out, f"left out of the sdist: {left_out}"
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
    assert _runtime_requirements(meta) == _declared_requirements()


@pytest.mark.timeout(360)
def test_the_installed_wheel_runs_on_its_own(built: Built, tmp_path: Path) -> None:
    target, cwd = tmp_path / "site", tmp_path / "elsewhere"
    cwd.mkdir()
    _run(
        sys.executable,
        "-m",
        "pip",
        "install",
        "--no-deps",
        "--no-index",
        "--disable-pip-version-check",
        "--quiet",
        "--target",
        target,
        built.wheel,
        cwd=cwd,
        timeout=120,
    )
    # Only the installed copy on the path (dependencies come from this venv's site-packages);
    # the working directory is not the checkout either (`python -m` puts it first on the path).
    alone = {"PYTHONPATH": str(target)}
    version = _run(sys.executable, "-m", "zwalk", "--version", cwd=cwd, timeout=60, **alone)
    where = str((target / "zwalk").resolve())
    assert f"zwalk {PROJECT['version']} ({where})" in version, version
    assert str(CHECKOUT) not in version
    # The console script pip wrote runs the same copy (--target puts it in bin/, on Windows too).
    scripts = [target / d / f"zwalk{x}" for d in ("bin", "Scripts") for x in ("", ".exe")]
    script = next((s for s in scripts if s.is_file()), None)
    assert script is not None, sorted(p.name for p in target.iterdir())
    assert where in _run(script, "--version", cwd=cwd, timeout=60, **alone)
    # The demo keeps to 127.0.0.1 by itself: three nodes, a find and a verified download.
    demo = _run(sys.executable, "-m", "zwalk", "demo", "--size", "8", cwd=cwd, timeout=240, **alone)
    assert "every chunk and the whole file verified with BLAKE3" in demo, demo
    assert "byte-identical to the source: yes" in demo, demo
