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
    OrthancSettingError,
    OrthancUnavailableError,
    find_orthanc,
)
from tests.support.tls import NginxUnavailableError, find_nginx  # noqa: E402

nox.options.sessions = ["lint", "typecheck", "tests"]
nox.options.reuse_venv = "yes"


def missing_servers(purpose: str, *, nginx: bool) -> tuple[list[str], bool]:
    """What stops `purpose` ("the tests", "the demo") from starting its servers, if anything.

    Returns the problems, one message each, and whether installing can solve them
    (it cannot when ORTHANC_BIN, ORTHANC_DICOMWEB_PLUGIN or NGINX_BIN names a bad path).
    The lookups are the fixtures' own.
    """
    problems: list[str] = []
    installable = True
    try:
        find_orthanc(purpose)
    except OrthancSettingError as error:
        problems.append(str(error))
        installable = False
    except OrthancUnavailableError as error:
        problems.append(str(error))
    if nginx:
        try:
            find_nginx()
        except NginxUnavailableError as error:
            if os.environ.get("NGINX_BIN"):
                problems.append(str(error))
                installable = False
            elif problems:
                problems.append(
                    f"nginx, the TLS front of the HTTPS ones among {purpose}, is missing too: "
                    "the same script installs it, or set NGINX_BIN to an nginx binary."
                )
            else:
                problems.append(
                    f"nginx is needed for {purpose}, as the TLS front of the HTTPS ones, and "
                    "it is not installed. Install it with `sudo scripts/install-orthanc.sh` "
                    "(Debian and Ubuntu: package nginx), or set NGINX_BIN to an nginx binary."
                )
    return problems, installable


def ensure_servers(session: nox.Session, purpose: str, *, nginx: bool = True) -> None:
    """Orthanc (and nginx) for `purpose`, installed by the project's script when possible."""
    problems, installable = missing_servers(purpose, nginx=nginx)
    if problems and installable and os.geteuid() == 0 and shutil.which("apt-get"):
        session.log("Installing what is missing with scripts/install-orthanc.sh")
        status = subprocess.run(["bash", str(INSTALL_SCRIPT)], check=False).returncode
        if status != 0:
            session.error(f"scripts/install-orthanc.sh failed with status {status}")
        problems, installable = missing_servers(purpose, nginx=nginx)
    if problems:
        # nox ends the message with a full stop of its own.
        session.error(" ".join(problems).removesuffix("."))


def install_project(session: nox.Session, *groups: str) -> None:
    session.install("-e", ".[http2,legacy]")
    for group in groups:
        session.install(*nox.project.dependency_groups(PYPROJECT, group))


@nox.session
@nox.parametrize("pydicom", ["3", "2.4"])
def tests(session: nox.Session, pydicom: str) -> None:
    """Run the test suite against real Orthanc servers, with pydicom 3.x and 2.4."""
    ensure_servers(session, "the tests")
    install_project(session, "test")
    session.install(f"pydicom=={pydicom}.*")
    session.run("pytest", *session.posargs)


@nox.session
def peer(session: nox.Session) -> None:
    """dicomweb-client 0.61.2's own web tests against aiodicomweb.compat (fetches its sdist)."""
    install_project(session, "peer")
    session.run("python", "tests/peer/run_peer_suite.py", *session.posargs)


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
    ensure_servers(session, "the demo", nginx=False)
    install_project(session, "test")
    # Ctrl-C (ending `-- --keep-server`, say): time for the demo to stop Orthanc and clean up.
    session.run("python", "scripts/demo.py", *session.posargs, interrupt_timeout=30)


@nox.session
def bench(session: nox.Session) -> None:
    """Benchmarks against baselines measured in the same run (see benchmarks/README.md)."""
    ensure_servers(session, "the benchmarks")
    install_project(session, "test", "bench")
    session.run("python", "benchmarks/run_all.py", *session.posargs)
