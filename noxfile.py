"""Developer tasks: `nox -s tests`, `lint`, `typecheck`, `demo`, `bench`."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import nox

ROOT = Path(__file__).parent
PYPROJECT = nox.project.load_toml(ROOT / "pyproject.toml")
INSTALL_SCRIPT = ROOT / "scripts" / "install-orthanc.sh"
sys.path.insert(0, str(ROOT))  # the fixtures' Orthanc and nginx lookups (standard library only)

from tests.support.orthanc import (  # noqa: E402
    INSTALL_HINT,
    OrthancUnavailableError,
    find_orthanc,
)
from tests.support.tls import INSTALL_HINT as NGINX_INSTALL_HINT  # noqa: E402
from tests.support.tls import NginxUnavailableError, find_nginx  # noqa: E402

nox.options.sessions = ["lint", "typecheck", "tests"]
nox.options.reuse_venv = "yes"


def nginx_missing() -> bool:
    """Whether the HTTPS tests' nginx front is missing (the same lookup as the fixtures)."""
    try:
        find_nginx()
        return False
    except NginxUnavailableError:
        return True


def ensure_orthanc(session: nox.Session) -> None:
    """Install Orthanc and nginx through the project's script when possible, else stop clearly."""
    try:
        find_orthanc()  # the same lookup as the test fixtures
        if not nginx_missing():
            return
    except OrthancUnavailableError:
        pass
    if os.geteuid() == 0 and shutil.which("apt-get"):
        session.log("Orthanc or nginx is missing: installing them with scripts/install-orthanc.sh")
        subprocess.run(["bash", str(INSTALL_SCRIPT)], check=True)
        return
    session.error(
        "Orthanc with its DICOMweb plugin, and nginx, are required for the integration tests. "
        + INSTALL_HINT
        + (" " + NGINX_INSTALL_HINT if nginx_missing() else "")
    )


def install_project(session: nox.Session, *groups: str) -> None:
    session.install("-e", ".[http2,legacy]")
    for group in groups:
        session.install(*nox.project.dependency_groups(PYPROJECT, group))


@nox.session
@nox.parametrize("pydicom", ["3", "2.4"])
def tests(session: nox.Session, pydicom: str) -> None:
    """Run the test suite against real Orthanc servers, with pydicom 3.x and 2.4."""
    ensure_orthanc(session)
    install_project(session, "test")
    session.install(f"pydicom=={pydicom}.*")
    session.run("pytest", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """Ruff lint and format check."""
    session.install(*nox.project.dependency_groups(PYPROJECT, "lint"))
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy --strict on the package."""
    install_project(session, "typecheck")
    session.run("mypy")


@nox.session
def demo(session: nox.Session) -> None:
    """The end-to-end demo against a local Orthanc that it starts itself."""
    ensure_orthanc(session)
    install_project(session, "test")
    session.run("python", "scripts/demo.py", *session.posargs)


@nox.session
def bench(session: nox.Session) -> None:
    """Benchmarks against baselines measured in the same run (see benchmarks/README.md)."""
    ensure_orthanc(session)
    install_project(session, "test", "bench")
    session.run("python", "benchmarks/run_all.py", *session.posargs)
