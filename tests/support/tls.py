"""A throw-away nginx that terminates TLS in front of a test Orthanc on loopback.

HTTPS deployments usually put a reverse proxy in front of the PACS, so the HTTPS
tests talk to Debian's nginx rather than to Orthanc's built-in TLS. Each `TlsFront`
runs one nginx with a generated configuration, and keeps its pid file, logs and
temporary files in its own throw-away folder. Nothing here depends on aiodicomweb.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.parse
from pathlib import Path

from tests.support.orthanc import free_port

INSTALL_HINT = (
    "nginx is needed for the HTTPS integration tests (a TLS front for Orthanc). "
    "Install it with `sudo scripts/install-orthanc.sh` (Debian: package nginx), "
    "or point NGINX_BIN at an existing nginx binary."
)

# nginx's complaint when another process took the port between free_port() and bind().
_PORT_TAKEN = "Address already in use"


def _quoted(path: Path) -> str:
    """A path as an nginx configuration string, safe with spaces and semicolons."""
    return '"' + str(path).replace("\\", "\\\\").replace('"', '\\"') + '"'


class NginxUnavailableError(RuntimeError):
    """nginx is not installed or did not come up."""


def find_nginx() -> str:
    """Locate the nginx binary, or raise NginxUnavailableError with the install hint."""
    override = os.environ.get("NGINX_BIN")
    if override:
        if not os.access(override, os.X_OK):
            raise NginxUnavailableError(f"NGINX_BIN={override} is not executable. {INSTALL_HINT}")
        return override
    binary = shutil.which("nginx")
    # /usr/sbin is not on every user's PATH.
    if binary is None and os.access("/usr/sbin/nginx", os.X_OK):
        binary = "/usr/sbin/nginx"
    if binary is None:
        raise NginxUnavailableError(INSTALL_HINT)
    return binary


class TlsFront:
    """One nginx process serving HTTPS on loopback and proxying to a plain-HTTP upstream.

    The upstream connection is HTTP/1.1 keep-alive and unbuffered in both directions,
    so streaming uploads and downloads reach the client as Orthanc produces them. The
    client's Host header is passed through and `Forwarded: proto=https;host=...` is
    added, so the DICOMweb plugin builds https URLs (BulkDataURI, RetrieveURL) that
    point back at the front rather than at Orthanc's plain-HTTP port.

    Args:
        upstream: The origin, e.g. `http://127.0.0.1:8042` (an Orthanc fixture's `root`).
        certificate: PEM file holding the server's private key and certificate chain.
        client_ca: When given, clients must present a certificate signed by this CA
            (mutual TLS); nginx answers 400 to those that do not.
        http2: Also offer HTTP/2 through ALPN.
        port: The loopback port to listen on; 0 picks a free one.
    """

    def __init__(
        self,
        upstream: str,
        certificate: Path | str,
        *,
        client_ca: Path | str | None = None,
        http2: bool = False,
        port: int = 0,
    ) -> None:
        parsed = urllib.parse.urlsplit(upstream)
        if parsed.scheme != "http" or parsed.hostname is None or parsed.port is None:
            raise ValueError(f"upstream must look like http://HOST:PORT, not {upstream!r}")
        self.upstream = f"{parsed.hostname}:{parsed.port}"
        self.certificate = Path(certificate).resolve()
        self.client_ca = None if client_ca is None else Path(client_ca).resolve()
        self.http2 = http2
        self._requested_port = port
        self._port = port
        self.workdir = Path(tempfile.mkdtemp(prefix="aiodicomweb-nginx-"))
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def port(self) -> int:
        """The loopback port nginx listens on (known once started)."""
        return self._port

    @property
    def url(self) -> str:
        """The HTTPS root, e.g. https://127.0.0.1:PORT."""
        return f"https://127.0.0.1:{self._port}"

    @property
    def dicomweb_url(self) -> str:
        """The DICOMweb root behind the front, e.g. https://127.0.0.1:PORT/dicom-web."""
        return f"{self.url}/dicom-web"

    @property
    def pid(self) -> int | None:
        """The nginx process id while it runs (there is only one: no master/worker split)."""
        return None if self.process is None else self.process.pid

    @property
    def error_log(self) -> Path:
        return self.workdir / "logs" / "error.log"

    def _config(self) -> str:
        work = self.workdir
        tmp = work / "tmp"
        listen = f"127.0.0.1:{self._port} ssl" + (" http2" if self.http2 else "")
        certificate = _quoted(self.certificate)
        mutual_tls = ""
        if self.client_ca is not None:
            mutual_tls = (
                f"        ssl_client_certificate {_quoted(self.client_ca)};\n"
                "        ssl_verify_client on;\n"
            )
        # A single process (master_process off): run as root it never switches to the
        # compiled-in `nobody` user, which could not enter this 0700 folder for its
        # temporary files; and stopping it cannot orphan a worker.
        return f"""\
daemon off;
master_process off;
worker_processes 1;
pid {_quoted(work / "nginx.pid")};
error_log {_quoted(self.error_log)} info;

events {{
    worker_connections 1024;
}}

http {{
    access_log {_quoted(work / "logs" / "access.log")};
    client_body_temp_path {_quoted(tmp / "client_body")};
    proxy_temp_path {_quoted(tmp / "proxy")};
    fastcgi_temp_path {_quoted(tmp / "fastcgi")};
    uwsgi_temp_path {_quoted(tmp / "uwsgi")};
    scgi_temp_path {_quoted(tmp / "scgi")};

    upstream dicomweb_origin {{
        server {self.upstream};
        keepalive 16;
        keepalive_requests 100000;
        keepalive_timeout 300s;
    }}

    # HTTP/1.0 clients may send no Host; the upstream speaks HTTP/1.1 and needs one.
    map $http_host $origin_host {{
        "" "127.0.0.1:{self._port}";
        default $http_host;
    }}

    server {{
        listen {listen};
        ssl_certificate {certificate};
        ssl_certificate_key {certificate};
        ssl_protocols TLSv1.2 TLSv1.3;
{mutual_tls}
        client_max_body_size 0;
        keepalive_requests 100000;
        keepalive_timeout 300s;

        location / {{
            proxy_pass http://dicomweb_origin;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $origin_host;
            # The DICOMweb plugin builds BulkDataURI and RetrieveURL from `Forwarded`:
            # it ignores X-Forwarded-Proto, and keeps the quotes of a quoted host.
            proxy_set_header Forwarded "proto=https;host=$origin_host";
            proxy_set_header X-Forwarded-Proto https;
            proxy_buffering off;
            proxy_request_buffering off;
            proxy_connect_timeout 10s;
            proxy_read_timeout 3600s;
            proxy_send_timeout 3600s;
            send_timeout 3600s;
        }}
    }}
}}
"""

    def start(self, timeout: float = 15.0) -> TlsFront:
        """Start nginx and wait until its port accepts connections.

        Raises:
            NginxUnavailableError: nginx is missing, exited, or did not come up in time;
                the message carries the end of nginx's error log.
        """
        if self.process is not None:
            return self
        try:
            binary = find_nginx()
        except NginxUnavailableError:
            self.stop()
            raise
        for _attempt in range(3):
            self._port = self._requested_port or free_port()
            failure = self._launch(binary, timeout)
            if failure is None:
                return self
            # Another process took the port we picked; only then is retrying sound.
            if self._requested_port or _PORT_TAKEN not in self.log_tail():
                break
        tail = self.log_tail()
        self.stop()
        raise NginxUnavailableError(f"nginx {failure} (port {self._port}):\n{tail}")

    def _launch(self, binary: str, timeout: float) -> str | None:
        """Run nginx once: None once it listens, else why not (the process is reaped)."""
        for folder in ("logs", "tmp"):
            (self.workdir / folder).mkdir(parents=True, exist_ok=True)
        config_path = self.workdir / "nginx.conf"
        config_path.write_text(self._config())
        # Fresh logs per attempt, so that log_tail() describes this attempt only.
        self.error_log.unlink(missing_ok=True)
        stderr = (self.workdir / "logs" / "stderr.log").open("wb")
        # -e: Debian's build logs to stderr until the configuration is read; -p keeps
        # relative paths inside the workdir rather than /usr/share/nginx.
        self.process = subprocess.Popen(
            [binary, "-p", str(self.workdir), "-c", str(config_path), "-e", str(self.error_log)],
            stdin=subprocess.DEVNULL,
            stdout=stderr,
            stderr=subprocess.STDOUT,
            cwd=self.workdir,
        )
        stderr.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if (code := self.process.poll()) is not None:
                self.process = None
                return f"exited with {code}"
            try:
                with socket.create_connection(("127.0.0.1", self._port), timeout=1):
                    return None
            except OSError:
                time.sleep(0.05)
        self._terminate()
        return f"did not accept connections within {timeout} s"

    def log_tail(self, lines: int = 30) -> str:
        """The end of nginx's error log and stderr, for failure messages."""
        text = ""
        for path in (self.workdir / "logs" / "stderr.log", self.error_log):
            if path.exists():
                text += path.read_text(errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def _terminate(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            # SIGTERM is nginx's fast shutdown: open connections are dropped, not drained.
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def stop(self) -> None:
        """Stop exactly the process this object started, reap it, remove the workdir."""
        self._terminate()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> TlsFront:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
