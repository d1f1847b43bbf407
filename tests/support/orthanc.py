"""Start and stop a throw-away Orthanc with its DICOMweb plugin on loopback.

Used by the test fixtures, the demo and the benchmarks, so that all of them talk
to the same kind of real server. Nothing here depends on aiodicomweb.
"""

from __future__ import annotations

import base64
import glob
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

INSTALL_HINT = (
    "Orthanc with its DICOMweb plugin is needed for the integration tests. "
    "Install it with `sudo scripts/install-orthanc.sh` (Debian: packages orthanc and "
    "orthanc-dicomweb), or point ORTHANC_BIN and ORTHANC_DICOMWEB_PLUGIN at an existing build."
)


class OrthancUnavailableError(RuntimeError):
    """Orthanc is not installed or did not come up."""


def find_orthanc() -> tuple[str, str]:
    """Locate the Orthanc binary and the DICOMweb plugin, or raise OrthancUnavailableError."""
    binary = os.environ.get("ORTHANC_BIN") or shutil.which("Orthanc")
    if binary is None and os.path.exists("/usr/sbin/Orthanc"):
        binary = "/usr/sbin/Orthanc"
    plugin = os.environ.get("ORTHANC_DICOMWEB_PLUGIN")
    if plugin is None:
        candidates = sorted(glob.glob("/usr/share/orthanc/plugins/libOrthancDicomWeb.so*"))
        candidates += sorted(glob.glob("/usr/lib/orthanc/libOrthancDicomWeb.so*"))
        plugin = candidates[0] if candidates else None
    if binary is None or plugin is None:
        raise OrthancUnavailableError(INSTALL_HINT)
    return binary, plugin


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class OrthancServer:
    """One Orthanc process with throw-away storage, started by `start()`."""

    username: str | None = None
    password: str | None = None
    storage_cache_mb: int = 128
    port: int = 0
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="orthanc-")))
    process: subprocess.Popen[bytes] | None = None

    @property
    def root(self) -> str:
        """The Orthanc REST root, e.g. http://127.0.0.1:PORT."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def dicomweb_url(self) -> str:
        return f"{self.root}/dicom-web"

    @property
    def auth(self) -> tuple[str, str] | None:
        if self.username is None:
            return None
        return (self.username, self.password or "")

    def _config(self, plugin: str) -> dict[str, object]:
        config: dict[str, object] = {
            "Name": "aiodicomweb-test",
            "HttpPort": self.port,
            "StorageDirectory": str(self.workdir / "storage"),
            "IndexDirectory": str(self.workdir / "index"),
            "Plugins": [plugin],
            "DicomServerEnabled": False,
            "RemoteAccessAllowed": False,
            "HttpCompressionEnabled": False,
            "OverwriteInstances": True,
            "StableAge": 5,
            "SaveJobs": False,
            "MaximumStorageCacheSize": self.storage_cache_mb,
            "OrthancExplorerEnabled": False,
            "WebDavEnabled": False,
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "EnableWado": False},
            "AuthenticationEnabled": self.username is not None,
        }
        if self.username is not None:
            config["RegisteredUsers"] = {self.username: self.password or ""}
        return config

    def start(self, timeout: float = 30.0) -> OrthancServer:
        binary, plugin = find_orthanc()
        self.port = self.port or free_port()
        config_path = self.workdir / "orthanc.json"
        config_path.write_text(json.dumps(self._config(plugin), indent=2))
        log = (self.workdir / "orthanc.log").open("wb")
        self.process = subprocess.Popen(
            [binary, "--logdir=" + str(self.workdir), str(config_path)],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self.workdir,
        )
        log.close()
        self._wait_ready(timeout)
        return self

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise OrthancUnavailableError(
                    f"Orthanc exited with {self.process.returncode}:\n{self.log_tail()}"
                )
            try:
                self.rest("GET", "/system")
                return
            except (urllib.error.URLError, ConnectionError):
                time.sleep(0.1)
        self.stop()
        raise OrthancUnavailableError(
            f"Orthanc did not answer within {timeout} s:\n{self.log_tail()}"
        )

    def log_tail(self, lines: int = 30) -> str:
        text = ""
        for path in sorted(self.workdir.glob("*.log")):
            text += path.read_text(errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def rest(self, method: str, path: str, body: bytes | None = None) -> bytes:
        """One request to Orthanc's own REST API (not DICOMweb), with credentials."""
        request = urllib.request.Request(self.root + path, data=body, method=method)
        if self.username is not None:
            token = base64.b64encode(f"{self.username}:{self.password}".encode()).decode()
            request.add_header("Authorization", f"Basic {token}")
        with urllib.request.urlopen(request, timeout=30) as response:
            return bytes(response.read())

    def rest_json(self, method: str, path: str, body: bytes | None = None) -> object:
        return json.loads(self.rest(method, path, body) or b"null")

    def stop(self) -> None:
        """Stop exactly the process this object started, then remove its storage."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None
        shutil.rmtree(self.workdir, ignore_errors=True)

    def kill(self) -> None:
        """Kill the process abruptly (fault tests), keeping its storage for a restart."""
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None

    def restart(self, timeout: float = 30.0) -> None:
        """Start again on the same port and storage after `kill()`."""
        self.start(timeout)

    def __enter__(self) -> OrthancServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
