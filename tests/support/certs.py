"""Throw-away certificates for the HTTPS tests, made by `trustme` per test session.

One CA signs a server certificate for `localhost` and `127.0.0.1`, one for another
host name (hostname checks), and a client certificate (mutual TLS); a second CA,
unknown to the clients, stands for a self-signed server.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import trustme

LOOPBACK_NAMES = ("localhost", "127.0.0.1")


@dataclass
class Certificates:
    """PEM files on disk, for nginx, the scripted servers and the clients."""

    folder: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="aiodicomweb-tls-")))

    def __post_init__(self) -> None:
        ca = trustme.CA()
        stranger = trustme.CA()
        self.ca = self._write("ca.pem", ca.cert_pem)
        self.server = self._chain("server.pem", ca.issue_cert(*LOOPBACK_NAMES))
        self.wrong_host = self._chain("wrong-host.pem", ca.issue_cert("dicom.example.org"))
        self.self_signed = self._chain("self-signed.pem", stranger.issue_cert(*LOOPBACK_NAMES))
        self.client = self._chain("client.pem", ca.issue_cert("client@aiodicomweb.test"))

    def _write(self, name: str, blob: trustme.Blob) -> Path:
        path = self.folder / name
        blob.write_to_path(str(path))
        return path

    def _chain(self, name: str, leaf: trustme.LeafCert) -> Path:
        """Key and certificate chain in one PEM file (as nginx, ssl and httpx take it)."""
        path = self.folder / name
        path.write_bytes(
            leaf.private_key_pem.bytes() + b"".join(blob.bytes() for blob in leaf.cert_chain_pems)
        )
        return path
