"""Run dicomweb-client 0.61.2's own web tests against `aiodicomweb.compat` (opt-in).

    python tests/peer/run_peer_suite.py            # fetch the sdist, run, summarise
    python tests/peer/run_peer_suite.py --helpers  # lend the peer's test-data encoder
    python tests/peer/run_peer_suite.py --peer     # the same tests against the peer itself

The sdist is fetched at run time with pip (hash-checked) into a temporary folder,
or taken from `--sdist FILE`; nothing of it is kept in the repository. Its tests
need `pytest-localserver` and `dicomweb-client` installed. Prints one line per
test that does not pass, with its exception, then the counts.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

VERSION = "0.61.2"
SHA256 = "c24727916e3fcf51f7666457ae08c8821c36f00e2c88685db39cd703d9721c2b"
TEST_FILES = ("test_web.py", "test_streaming.py", "test_api.py")
REPOSITORY = Path(__file__).resolve().parents[2]


def fetch_sdist(folder: Path) -> Path:
    """The sdist, downloaded by pip and checked against its known hash."""
    requirement = folder / "requirement.txt"
    requirement.write_text(f"dicomweb-client=={VERSION} --hash=sha256:{SHA256}\n")
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary",
         ":all:", "--require-hashes", "-r", str(requirement), "-d", str(folder)],
        check=True,
    )  # fmt: skip
    return next(folder.glob("dicomweb_client-*.tar.gz"))


def unpack_tests(sdist: Path, folder: Path) -> Path:
    """The sdist's tests/ and data/ (which the tests read) laid out under `folder`."""
    with tarfile.open(sdist) as archive:
        archive.extractall(folder / "sdist", filter="data")
    top = next((folder / "sdist").iterdir())
    root = folder / "suite"
    shutil.copytree(top / "tests", root / "tests")
    shutil.copytree(top / "data", root / "data")
    (root / "pytest.ini").write_text("[pytest]\n")  # none of this repository's options
    return root


def run(root: Path, *, peer: bool, helpers: bool) -> Path:
    """Run the suite; the JUnit report it leaves."""
    report = root / "report.xml"
    env = {**os.environ, "PYTHONPATH": str(REPOSITORY), "PEER_HELPERS": "1" if helpers else ""}
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
               "--junitxml", str(report), "--rootdir", str(root), "-c", str(root / "pytest.ini"),
               *(str(root / "tests" / name) for name in TEST_FILES)]  # fmt: skip
    if not peer:
        command[3:3] = ["-p", "tests.peer.substitute"]
    subprocess.run(command, cwd=root, env=env, check=False, stdout=subprocess.DEVNULL)
    return report


def summarise(report: Path) -> int:
    """Print each test that did not pass with its exception; return how many failed."""
    passed = failed = 0
    for case in ET.parse(report).iter("testcase"):
        problem = case.find("failure")
        if problem is None:
            problem = case.find("error")
        if problem is None:
            passed += case.find("skipped") is None
            continue
        failed += 1
        message = (problem.get("message") or "").splitlines()[0][:160]
        print(f"{case.get('name')}: {message}")
    print(f"{passed} passed, {failed} failed")
    return failed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sdist", type=Path, help="use this dicomweb-client sdist")
    parser.add_argument(
        "--helpers",
        action="store_true",
        help="lend the peer's _encode_multipart_message (test data only)",
    )
    parser.add_argument("--peer", action="store_true", help="run against the peer itself")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="peer-suite-") as temporary:
        folder = Path(temporary)
        sdist = args.sdist or fetch_sdist(folder)
        root = unpack_tests(sdist, folder)
        summarise(run(root, peer=args.peer, helpers=args.helpers))
    return 0


if __name__ == "__main__":
    sys.exit(main())
