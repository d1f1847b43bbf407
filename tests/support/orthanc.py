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

# Where Debian and Ubuntu put them; /usr/sbin is not on every user's PATH.
DEBIAN_BINARY = "/usr/sbin/Orthanc"
DEBIAN_PLUGIN_DIRS = ("/usr/share/orthanc/plugins", "/usr/lib/orthanc")

INSTALL_HINT = (
    "Install it with `sudo scripts/install-orthanc.sh` (Debian and Ubuntu: packages orthanc "
    "and orthanc-dicomweb), or set ORTHANC_BIN and ORTHANC_DICOMWEB_PLUGIN to the Orthanc "
    "binary and the DICOMweb plugin of an existing build."
)


class OrthancUnavailableError(RuntimeError):
    """Orthanc is not installed or did not come up."""


class OrthancSettingError(OrthancUnavailableError):
    """ORTHANC_BIN or ORTHANC_DICOMWEB_PLUGIN names nothing usable (installing would not help)."""


def _named(variable: str, path: str) -> str:
    """`VARIABLE=path` when the path came from that variable, else the path."""
    return f"{variable}={path}" if os.environ.get(variable) == path else path


def find_orthanc(purpose: str = "the tests") -> tuple[str, str]:
    """Locate the Orthanc binary and the DICOMweb plugin, or raise OrthancUnavailableError.

    `purpose` ("the tests", "the demo") completes the messages. ORTHANC_BIN and
    ORTHANC_DICOMWEB_PLUGIN win over the Debian paths; one that names nothing
    usable is refused with OrthancSettingError, never passed over.
    """
    override = os.environ.get("ORTHANC_BIN")
    if override:
        binary = shutil.which(override)
        if binary is None:
            raise OrthancSettingError(
                f"ORTHANC_BIN={override} is not an executable file. Point it at the Orthanc "
                f"binary for {purpose}, or unset it to use an installed Orthanc."
            )
    else:
        binary = shutil.which("Orthanc")
        if binary is None and os.access(DEBIAN_BINARY, os.X_OK):
            binary = DEBIAN_BINARY
    plugin = os.environ.get("ORTHANC_DICOMWEB_PLUGIN")
    if plugin:
        if not os.path.exists(plugin):
            raise OrthancSettingError(
                f"ORTHANC_DICOMWEB_PLUGIN={plugin} does not exist. Point it at the DICOMweb "
                f"plugin (libOrthancDicomWeb.so) for {purpose}, or unset it to use an "
                "installed plugin."
            )
    else:
        candidates = [
            path
            for folder in DEBIAN_PLUGIN_DIRS
            for path in sorted(glob.glob(os.path.join(folder, "libOrthancDicomWeb.so*")))
        ]
        plugin = candidates[0] if candidates else None
    needed = f"Orthanc with its DICOMweb plugin is needed for {purpose}"
    if binary is None:
        raise OrthancUnavailableError(
            f"{needed}, and Orthanc is not installed (neither on PATH nor in "
            f"{os.path.dirname(DEBIAN_BINARY)}). {INSTALL_HINT}"
        )
    if plugin is None:
        raise OrthancUnavailableError(
            f"{needed}, and the plugin is not installed (no libOrthancDicomWeb.so in "
            f"{' or '.join(DEBIAN_PLUGIN_DIRS)}). {INSTALL_HINT}"
        )
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
    purpose: str = "the tests"  # who needs it, for the messages: "the tests", "the demo"

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
        """Start Orthanc and wait until it answers with its DICOMweb plugin loaded.

        Raises OrthancUnavailableError, having stopped the process and removed
        `workdir`, if it cannot.
        """
        try:
            binary, plugin = find_orthanc(self.purpose)
            self.port = self.port or free_port()
            config_path = self.workdir / "orthanc.json"
            config_path.write_text(json.dumps(self._config(plugin), indent=2))
            self._launch(binary, config_path)
            self._wait_ready(timeout, binary, plugin)
            self._check_plugin(plugin)
        except BaseException:
            self.stop()
            raise
        return self

    def _launch(self, binary: str, config_path: Path) -> None:
        with (self.workdir / "orthanc.log").open("wb") as log:
            try:
                self.process = subprocess.Popen(
                    [binary, "--logdir=" + str(self.workdir), str(config_path)],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    cwd=self.workdir,
                )
            except OSError as error:
                raise OrthancUnavailableError(
                    f"{_named('ORTHANC_BIN', binary)} could not be started: {error.strerror}."
                ) from error

    def _wait_ready(self, timeout: float, binary: str, plugin: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise OrthancUnavailableError(
                    f"Orthanc ({_named('ORTHANC_BIN', binary)}, with the plugin "
                    f"{_named('ORTHANC_DICOMWEB_PLUGIN', plugin)}) exited with status "
                    f"{self.process.returncode} before answering. The end of its log:\n"
                    f"{self.log_tail()}"
                )
            try:
                self.rest("GET", "/system")
                return
            except (urllib.error.URLError, ConnectionError):
                time.sleep(0.1)
        raise OrthancUnavailableError(
            f"Orthanc did not answer within {timeout} s. The end of its log:\n{self.log_tail()}"
        )

    def _check_plugin(self, plugin: str) -> None:
        """Orthanc starts without a plugin it cannot find, so ask it which ones it loaded."""
        loaded = self.rest_json("GET", "/plugins")
        if isinstance(loaded, list) and "dicom-web" in loaded:
            return
        names = ", ".join(map(str, loaded)) if isinstance(loaded, list) and loaded else "none"
        raise OrthancUnavailableError(
            f"Orthanc started without its DICOMweb plugin: "
            f"{_named('ORTHANC_DICOMWEB_PLUGIN', plugin)} did not load as one "
            f"(plugins loaded: {names}). Point ORTHANC_DICOMWEB_PLUGIN at the DICOMweb "
            "plugin, libOrthancDicomWeb.so (Debian and Ubuntu: package orthanc-dicomweb)."
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
