"""Ctrl-C on the blocking client, and a script that ends with a stream still open.

Each case runs a real script in a child process against a scripted server that
keeps its answer going for far longer than the test waits.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests.support.rawserver import raw_server

BOUNDARY = "interrupt-boundary"
HEAD = (
    "HTTP/1.1 200 OK\r\n"
    f'Content-Type: multipart/related; type="application/dicom"; boundary={BOUNDARY}\r\n\r\n'
    f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n"
).encode()
ROOT = Path(__file__).resolve().parents[1]


def slow_series(seconds: float):
    """A series answer whose one part goes on for `seconds`, a kilobyte at a time."""

    def script(sock: socket.socket) -> None:
        sock.sendall(HEAD)
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            sock.sendall(b"\0" * 1024)
            time.sleep(0.05)

    return lambda path: script


def child(code: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
    )  # fmt: skip


DOWNLOADS = {
    "client": """
        import sys
        from aiodicomweb import DicomWebClient
        with DicomWebClient(sys.argv[1], retry=None) as client:
            print("started", flush=True)
            client.download_series("1.2", "1.2.3", sys.argv[2])
    """,
    "adapter": """
        import sys
        from aiodicomweb import DicomWebAdapter
        adapter = DicomWebAdapter(sys.argv[1])
        print("started", flush=True)
        adapter.retrieveSeriesIntoFolder("1.2", "1.2.3", sys.argv[2], useStudySubFolder=False)
    """,
}


@pytest.mark.parametrize("api", sorted(DOWNLOADS))
def test_ctrl_c_cancels_a_blocking_download_at_once_and_leaves_nothing(
    api: str, tmp_path: Path
) -> None:
    with raw_server(slow_series(60)) as url:
        target = tmp_path / "out" if api == "client" else tmp_path
        process = child(DOWNLOADS[api], url, str(target))
        assert process.stdout is not None and process.stdout.readline() == "started\n"
        time.sleep(1.0)  # the download is under way
        process.send_signal(signal.SIGINT)
        interrupted = time.monotonic()
        _, stderr = process.communicate(timeout=30)
        took = time.monotonic() - interrupted
    assert "KeyboardInterrupt" in stderr
    assert took < 5, f"the process needed {took:.1f} s to exit after Ctrl-C"
    assert sorted(os.listdir(tmp_path)) == []  # no folder, no hidden .partial


def test_a_script_that_ends_with_a_stream_open_exits_promptly() -> None:
    def first_part_then_wait(sock: socket.socket) -> None:
        sock.sendall(HEAD + b"DICM" * 100 + f"\r\n--{BOUNDARY}\r\n".encode())
        time.sleep(30)  # the rest never comes

    code = """
        import sys
        from aiodicomweb import DicomWebClient
        client = DicomWebClient(sys.argv[1], retry=None)

        def parts():
            with client.stream_series("1.2", "1.2.3") as stream:
                yield from stream

        suspended = parts()
        next(suspended)
        print("suspended", flush=True)
    """
    with raw_server(lambda path: first_part_then_wait) as url:
        process = child(code, url)
        started = time.monotonic()
        try:
            process.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()
            pytest.fail("the interpreter did not exit with a stream left open")
        took = time.monotonic() - started
    assert process.returncode == 0
    assert took < 10
