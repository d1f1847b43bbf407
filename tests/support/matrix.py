"""One test matrix for every production path: fixtures that serve a table's handler.

The error, retry and fault tables script their servers as MockTransport handlers.
A test that takes the `wire` fixture runs once per production path of the client,
with the same handler served over a real loopback socket by `WireServer`:

- `http`: plain http, the client's lean fast path;
- `https`: TLS with the session's test CA (`verify=` its PEM file): the fast path
  over TLS;
- `httpx`: https with `http2=True`, which always goes through httpx's own
  transport; the server speaks HTTP/1.1 only, and ALPN settles on it.

Usage::

    async def test_something(wire: Wire) -> None:
        async with wire.client(handler, retry) as client:
            ...
        assert error.url == f"{wire.url}/studies"

A module whose tests run on asyncio and trio parametrizes both axes at once with
`WIRE_MATRIX` (see `parametrize_wire`) instead of taking their full product.

Registered in `tests/conftest.py` (`pytest_plugins`); the session's `certificates`
fixture comes from there too.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from aiodicomweb import AsyncDicomWebClient, RetryPolicy
from tests.support.certs import Certificates
from tests.support.wireserver import Handler, WireServer

__all__ = ["PATHS", "WIRE_MATRIX", "Wire", "parametrize_wire"]

PATHS = ("http", "https", "httpx")

# The (anyio backend, path) pairs for modules that run on both backends: asyncio on
# every path, trio on the two fast paths, whose event-loop code is the library's own
# (httpx's transport on trio is httpx's to test). A sixth pair would add a fifth to
# the time of these tests, which are already a few times slower than on MockTransport.
WIRE_MATRIX = [
    pytest.param(backend, path, id=f"{backend}-{path}")
    for backend, path in [
        ("asyncio", "http"),
        ("asyncio", "https"),
        ("asyncio", "httpx"),
        ("trio", "http"),
        ("trio", "https"),
    ]
]


class Wire:
    """One test's server on one path; `client` picks the handler and builds a client.

    Args:
        path: The production path: "http", "https" or "httpx".
        tls: The server-side TLS context, None for plain http.
        client_options: What a client needs to take that path (`verify`, `http2`).
    """

    def __init__(
        self, path: str, tls: ssl.SSLContext | None, client_options: dict[str, Any]
    ) -> None:
        self.path = path
        self.client_options = client_options
        self.handler: Handler | None = None
        self.server = WireServer(self.serve, tls=tls)
        self.url = self.server.url

    def serve(self, request: httpx.Request) -> httpx.Response:
        """The server's handler: whatever the test handed to `client` last."""
        if self.handler is None:
            raise AssertionError(f"{request.method} {request.url} before any handler was set")
        return self.handler(request)

    def client(
        self,
        handler: Handler,
        retry: RetryPolicy | None = None,
        *,
        url: str | None = None,
        **options: Any,
    ) -> AsyncDicomWebClient:
        """A client on this path, talking to this server, which now answers with `handler`.

        Args:
            handler: A MockTransport handler: builds each answer, or raises to fault
                the connection (see `WireServer`).
            retry: The client's retry policy.
            url: The base URL, when not `self.url` (credentials in it, another host).
            options: Further `AsyncDicomWebClient` arguments (auth, timeout...); they
                win over the path's own (`verify`, `http2`).
        """
        self.handler = handler
        options = {**self.client_options, **options}
        return AsyncDicomWebClient(url or self.url, retry=retry, **options)

    def url_with_userinfo(self, userinfo: str) -> str:
        """The base URL with `user:password@` in it."""
        scheme, rest = self.url.split("://", 1)
        return f"{scheme}://{userinfo}@{rest}"


def parametrize_wire(metafunc: pytest.Metafunc) -> None:
    """Runs each test that takes `wire` on the `WIRE_MATRIX` pairs.

    Call it from a module's `pytest_generate_tests`: it overrides the module's
    `anyio_backend` and the `wire_path` fixture for those tests together.
    """
    if "wire_path" in metafunc.fixturenames:
        metafunc.parametrize(("anyio_backend", "wire_path"), WIRE_MATRIX)


def server_context(certificates: Certificates) -> ssl.SSLContext:
    """The wire server's TLS side: the test server certificate, HTTP/1.1 only over ALPN."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(certificates.server)
    context.set_alpn_protocols(["http/1.1"])
    return context


@pytest.fixture(scope="session")
def wire_tls(certificates: Certificates) -> ssl.SSLContext:
    """The server-side TLS context all wire servers of the session share."""
    return server_context(certificates)


@pytest.fixture(params=[pytest.param(path, id=path) for path in PATHS])
def wire_path(request: pytest.FixtureRequest) -> str:
    """The production path a test runs on: "http", "https" or "httpx"."""
    return str(request.param)


@pytest.fixture
def wire(wire_path: str, certificates: Certificates, wire_tls: ssl.SSLContext) -> Iterator[Wire]:
    """A `WireServer` on `wire_path` for this test, stopped when the test ends."""
    tls = None if wire_path == "http" else wire_tls
    options: dict[str, Any] = {}
    if wire_path != "http":
        options["verify"] = str(certificates.ca)
    if wire_path == "httpx":
        options["http2"] = True
    wire = Wire(wire_path, tls, options)
    with wire.server:
        yield wire
