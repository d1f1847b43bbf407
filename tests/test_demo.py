"""scripts/demo.py, the README's first command, run as the shell runs it."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "scripts" / "demo.py"


def _env(tmp_path: Path, **overrides: str) -> dict[str, str]:
    """The demo's environment; its temporary folders (Orthanc's too) go in `tmp_path`."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("ORTHANC_")}
    env.update(TMPDIR=str(tmp_path), PYTHONUNBUFFERED="1", **overrides)
    return env


def _demo(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(DEMO), *args],
        env=_env(tmp_path, **env),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_help_describes_the_demo_and_starts_nothing(tmp_path: Path):
    started = time.monotonic()
    result = _demo(tmp_path, "--help")
    assert result.returncode == 0, result.stderr
    assert time.monotonic() - started < 20
    assert result.stdout.startswith("usage: scripts/demo.py [-h] [--keep-server]")
    assert "Starts a throw-away Orthanc" in result.stdout
    assert "--keep-server" in result.stdout
    assert result.stderr == ""
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("variable", "value", "complaint"),
    [
        ("ORTHANC_BIN", "/nonexistent/Orthanc", "is not an executable file"),
        ("ORTHANC_DICOMWEB_PLUGIN", "/nonexistent.so", "does not exist"),
    ],
)
def test_a_bad_variable_fails_the_demo_cleanly_before_anything_starts(
    tmp_path: Path, variable: str, value: str, complaint: str
):
    result = _demo(tmp_path, **{variable: value})
    assert result.returncode == 1
    assert result.stderr.startswith(f"\nDEMO FAILED: {variable}={value} {complaint}. ")
    assert "for the demo" in result.stderr
    assert "Traceback" not in result.stderr
    assert "Orthanc is up" not in result.stdout
    assert list(tmp_path.iterdir()) == []


@pytest.mark.orthanc  # the demo starts its own Orthanc
def test_keep_server_serves_the_sample_study_until_ctrl_c(tmp_path: Path):
    demo = subprocess.Popen(
        [sys.executable, str(DEMO), "--keep-server"],
        env=_env(tmp_path),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert demo.stdout is not None
        output = ""
        for line in demo.stdout:
            output += line
            if line.startswith("DICOMweb URL: "):
                url = line.removeprefix("DICOMweb URL: ").strip()
                break
        else:
            pytest.fail(f"the demo ended without serving:\n{output}")
        output += demo.stdout.readline() + demo.stdout.readline()
        assert f"$ aiodicomweb --url {url} search studies" in output
        assert "== Summary" in output
        for verb in ("Stored", "Downloaded"):  # one figure per transfer, printed twice
            figures = re.findall(rf"{verb} \d+ instances \(.*?\) in [\d.]+ s, [\d.]+ MB/s", output)
            assert len(figures) == 2 and figures[0] == figures[1], output
        generated = re.search(r"^(\d+) instances in \d+ series", output, re.MULTILINE)
        assert generated is not None, output
        query = "studies?PatientID=DEMO-1&includefield=NumberOfStudyRelatedInstances"
        request = urllib.request.Request(
            f"{url}/{query}", headers={"Accept": "application/dicom+json"}
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            (study,) = json.loads(response.read())
        assert study["00201208"]["Value"] == [int(generated[1])]
        demo.send_signal(signal.SIGINT)
        rest, _ = demo.communicate(timeout=60)
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait()
    assert demo.returncode == 0, output + rest
    assert "Orthanc stopped, temporary folders removed" in rest
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(OSError):
        urllib.request.urlopen(f"{url}/studies", timeout=5).close()
