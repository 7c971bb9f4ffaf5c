"""Packaging: the wheel builds without deprecation warnings, ships the license and the
project's metadata, the version has one source, and the Dockerfile runs as a non-root user."""

from __future__ import annotations

import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path
from typing import Any

import pytest

import statemachine_server

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
BUILD_TIMEOUT = 120.0
#: What the wheel is built from, copied out of the working tree so that the build's
#: own files (build/, *.egg-info) never land in it.
SOURCES = ("pyproject.toml", "README.md", "LICENSE", "statemachine_server")
URLS = {
    "Homepage": "https://github.com/statemachine-server/statemachine-server",
    "Documentation": "https://github.com/statemachine-server/statemachine-server/blob/main/docs",
    "Changelog": "https://github.com/statemachine-server/statemachine-server/blob/main/CHANGELOG.md",
    "Issues": "https://github.com/statemachine-server/statemachine-server/issues",
}


def _setuptools_major() -> int | None:
    try:
        version = importlib.metadata.version("setuptools")
    except importlib.metadata.PackageNotFoundError:
        return None
    head = version.split(".")[0]
    return int(head) if head.isdigit() else None


_SETUPTOOLS = _setuptools_major()
needs_setuptools_77 = pytest.mark.skipif(
    _SETUPTOOLS is None or _SETUPTOOLS < 77,
    reason="building the wheel without isolation needs setuptools>=77 (PEP 639 license "
    "expressions) in this environment; install the 'test' extra",
)


class Built:
    def __init__(self, wheel: Path, output: str) -> None:
        self.wheel = wheel
        self.output = output

    def metadata(self) -> str:
        with zipfile.ZipFile(self.wheel) as whl:
            (name,) = [n for n in whl.namelist() if n.endswith(".dist-info/METADATA")]
            return whl.read(name).decode("utf-8")


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    base = tmp_path_factory.mktemp("packaging")
    src, out = base / "src", base / "dist"
    src.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    for name in SOURCES:
        path = ROOT / name
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=ignore)
        else:
            shutil.copy2(path, src / name)
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_INPUT": "1"}
    command = [sys.executable, "-m", "pip", "wheel", "-v", "--no-deps", "--no-build-isolation"]
    try:
        proc = subprocess.run(
            [*command, "-w", str(out), "."],
            cwd=src,
            env=env,
            capture_output=True,
            text=True,
            timeout=BUILD_TIMEOUT,
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"building the wheel took more than {BUILD_TIMEOUT:.0f} s: {exc}")
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    (wheel,) = out.glob("statemachine_server-*.whl")
    return Built(wheel, output)


@needs_setuptools_77
@pytest.mark.timeout(BUILD_TIMEOUT + 60)
def test_wheel_builds_without_deprecation_warnings(built: Built) -> None:
    lines = [line for line in built.output.splitlines() if "deprecat" in line.lower()]
    assert not lines, "\n".join(lines)
    assert "SetuptoolsDeprecationWarning" not in built.output


@needs_setuptools_77
@pytest.mark.timeout(BUILD_TIMEOUT + 60)
def test_wheel_ships_license_and_metadata(built: Built) -> None:
    with zipfile.ZipFile(built.wheel) as whl:
        names = whl.namelist()
        (dist_info,) = {n.split("/")[0] for n in names if n.split("/")[0].endswith(".dist-info")}
        licenses = [n for n in names if n.startswith(dist_info) and n.endswith("/LICENSE")]
        assert licenses, names
        shipped = whl.read(licenses[0]).decode("utf-8")
        assert "py.typed" in {Path(n).name for n in names}
        assert "statemachine_server/specs/echo.yaml" in names
    assert shipped == (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert "MIT License" in shipped
    assert "Copyright (c) 2026 The statemachine-server authors" in shipped

    metadata = built.metadata()
    headers = metadata.split("\n\n", 1)[0].splitlines()
    assert "License-Expression: MIT" in headers
    assert not [h for h in headers if h.startswith("Classifier: License ::")]
    assert f"Version: {statemachine_server.__version__}" in headers
    for label, url in URLS.items():
        assert f"Project-URL: {label}, {url}" in headers


def test_version_has_one_source() -> None:
    project = PYPROJECT["project"]
    assert "version" not in project
    assert "version" in project["dynamic"]
    dynamic = PYPROJECT["tool"]["setuptools"]["dynamic"]["version"]
    assert dynamic == {"attr": "statemachine_server.__version__"}
    assert importlib.metadata.version("statemachine-server") == statemachine_server.__version__


def test_project_metadata() -> None:
    project = PYPROJECT["project"]
    assert project["license"] == "MIT"
    assert project["license-files"] == ["LICENSE"]
    assert project["urls"] == URLS
    assert not [c for c in project["classifiers"] if c.startswith("License ::")]
    for version in ("3.11", "3.12", "3.13"):
        assert f"Programming Language :: Python :: {version}" in project["classifiers"]
    assert "Typing :: Typed" in project["classifiers"]
    requires = PYPROJECT["build-system"]["requires"]
    assert requires == ["setuptools>=77"]
    extras = project["optional-dependencies"]
    lint_tools = {"ruff", "mypy", "types-pyyaml"}
    assert not [r for r in extras["test"] if _name(r) in lint_tools]
    assert {_name(r) for r in extras["lint"]} == lint_tools
    assert extras["dev"][0] == "statemachine-server[test,lint,fast]"


def _name(requirement: str) -> str:
    for stop in "<>=!~;[ ":
        requirement = requirement.split(stop, 1)[0]
    return requirement.lower()


def _instructions(text: str) -> list[tuple[str, str]]:
    """The Dockerfile's instructions as (KEYWORD, arguments), continuations joined."""
    joined: list[str] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        joined.append(pending + line)
        pending = ""
    out = []
    for line in joined:
        keyword, _, args = line.partition(" ")
        out.append((keyword.upper(), args.strip()))
    return out


def _exec_form(args: str) -> Any:
    value = json.loads(args)
    assert isinstance(value, list), args
    return value


def test_dockerfile_runs_the_console_script_as_non_root() -> None:
    steps = _instructions((ROOT / "Dockerfile").read_text(encoding="utf-8"))
    keywords = [k for k, _ in steps]
    assert steps[0] == ("FROM", "python:3.12-slim")

    entry = keywords.index("ENTRYPOINT")
    users = [args for keyword, args in steps[:entry] if keyword == "USER"]
    assert users, "no USER before ENTRYPOINT"
    assert users[-1].split(":")[0] not in {"root", "0"}
    assert "USER" not in keywords[entry:]

    entrypoint = _exec_form(steps[entry][1])
    assert entrypoint == ["statemachine-server"]
    assert entrypoint[0] in PYPROJECT["project"]["scripts"]
    assert _exec_form(dict(steps)["CMD"]) == ["run"]
    # Every interface, from the environment: a spec given on the command line
    # (`run /specs/x.yaml`) is reachable from outside the container too.
    assert "STATEMACHINE_SERVER_HOST=0.0.0.0" in dict(steps)["ENV"]

    installs = [args for keyword, args in steps if keyword == "RUN" and "pip install" in args]
    assert any("--no-cache-dir" in a and ".[fast]" in a for a in installs), installs
    assert dict(steps)["EXPOSE"] == "12345"
    echo = (ROOT / "statemachine_server" / "specs" / "echo.yaml").read_text(encoding="utf-8")
    assert "port: 12345" in echo  # the port the default command serves


def test_dockerignore_keeps_local_state_out() -> None:
    ignored = (ROOT / ".dockerignore").read_text(encoding="utf-8").split()
    for pattern in (".venv", ".git", "**/__pycache__", "**/*.egg-info", "build", "dist"):
        assert pattern in ignored
    for needed in SOURCES:
        assert needed not in ignored
