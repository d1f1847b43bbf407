"""TLS settings as httpx takes them, made into one `ssl.SSLContext` on first use."""

from __future__ import annotations

import os
import ssl
from typing import Any

from aiodicomweb._exceptions import DicomWebUsageError

__all__ = ["TlsSettings"]

# Environment variables naming CA certificates, in the order they are read when
# `trust_env` is on: httpx reads the first and last, requests the middle one.
_CA_VARIABLES = ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "SSL_CERT_DIR")


class TlsSettings:
    """`verify`, `cert` and `trust_env`, with httpx's meaning; one context per client.

    The context is built on the first https connection, not by the constructor:
    loading the CA bundle costs tens of milliseconds that a plain-http client
    never needs. The same context serves the fast path and httpx's transports,
    so both verify alike, and httpx never sees a deprecated `verify=<str>` or
    `cert=`.

    Args:
        verify: True (the system's trusted CAs via certifi, or the environment's),
            False (no verification), a CA bundle file or folder, or an `SSLContext`
            used as it is.
        cert: A client certificate for mutual TLS: a PEM file holding key and
            certificate, or `(certfile, keyfile)` or `(certfile, keyfile, password)`.
        trust_env: Read `SSL_CERT_FILE`, `REQUESTS_CA_BUNDLE` and `SSL_CERT_DIR`.
    """

    def __init__(self, verify: Any = True, cert: Any = None, trust_env: bool = True) -> None:
        if not isinstance(verify, (bool, str, os.PathLike, ssl.SSLContext)):
            raise DicomWebUsageError(
                "verify must be True, False, a CA bundle path or an ssl.SSLContext"
            )
        if cert is not None and not isinstance(cert, (str, os.PathLike, tuple)):
            raise DicomWebUsageError("cert must be a PEM path or a (certfile, keyfile) tuple")
        self.verify = verify
        self.cert = cert
        self.trust_env = trust_env
        self._context: ssl.SSLContext | None = None

    def __repr__(self) -> str:
        return f"<TlsSettings verify={self.verify!r} cert={'yes' if self.cert else 'no'}>"

    def context(self) -> ssl.SSLContext:
        """The client's `SSLContext`, built once.

        Raises:
            DicomWebUsageError: a CA bundle or client certificate cannot be loaded.
        """
        if self._context is None:
            try:
                self._context = self._build()
            except (OSError, ssl.SSLError) as error:
                raise DicomWebUsageError(f"cannot load TLS settings: {error}") from None
        return self._context

    def _build(self) -> ssl.SSLContext:
        verify = self.verify
        if isinstance(verify, ssl.SSLContext):
            context = verify
        elif verify is False:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        else:
            ca = self._environment_ca() if verify is True else os.fspath(verify)
            context = _verifying_context(ca)
        context.set_alpn_protocols(["http/1.1"])  # httpx's transport widens it for HTTP/2
        if self.cert is not None:
            if isinstance(self.cert, tuple):
                context.load_cert_chain(*self.cert)
            else:
                context.load_cert_chain(os.fspath(self.cert))
        return context

    def _environment_ca(self) -> str | None:
        if not self.trust_env:
            return None
        return next((os.environ[name] for name in _CA_VARIABLES if os.environ.get(name)), None)


def _verifying_context(ca: str | None) -> ssl.SSLContext:
    """A verifying context trusting `ca` (a file or folder), else certifi's bundle."""
    if ca is None:
        import certifi  # httpx's own dependency, and its default

        return ssl.create_default_context(cafile=certifi.where())
    if os.path.isdir(ca):
        return ssl.create_default_context(capath=ca)
    return ssl.create_default_context(cafile=ca)
