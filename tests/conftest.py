"""Fixtures: real Orthanc servers on loopback and the generated test corpus.

Every test that needs Orthanc or its nginx TLS front is marked `orthanc`, so that
`pytest -m "not orthanc"` is the fast unit run that starts neither.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.support.certs import Certificates
from tests.support.corpus import Corpus, upload_instances
from tests.support.dicomgen import TEST_CORPUS, generate_series
from tests.support.orthanc import OrthancServer, OrthancUnavailableError
from tests.support.proxy import ForwardProxy
from tests.support.tls import NginxUnavailableError, TlsFront

pytest_plugins = ["tests.support.matrix"]  # `wire`: the error tables on every path

AUTH_USER = "radiologist"
AUTH_PASSWORD = "s3cret-Pa55word"

# The fixtures below that start an Orthanc or an nginx TLS front. The `wire` fixture
# (tests/support/matrix.py) starts neither: its servers, https included, run in-process.
SERVER_FIXTURES = frozenset(
    {
        "orthanc",
        "orthanc_auth",
        "corpus",
        "corpus_auth",
        "orthanc_https",
        "https_wrong_host",
        "https_self_signed",
        "https_mtls",
    }
)


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects by marker
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Marks `orthanc` each test that takes a server fixture, directly or through another."""
    for item in items:
        if SERVER_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.orthanc)


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    """Each anyio test runs on asyncio and on trio, unless its module overrides this."""
    return str(request.param)


def _start(server: OrthancServer) -> OrthancServer:
    try:
        return server.start()
    except OrthancUnavailableError as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture(scope="session")
def orthanc() -> Iterator[OrthancServer]:
    """A real Orthanc with the DICOMweb plugin, no authentication."""
    server = _start(OrthancServer())
    yield server
    server.stop()


@pytest.fixture(scope="session")
def orthanc_auth() -> Iterator[OrthancServer]:
    """A real Orthanc that requires HTTP basic authentication."""
    server = _start(OrthancServer(username=AUTH_USER, password=AUTH_PASSWORD))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def corpus(orthanc: OrthancServer) -> Corpus:
    """The generated test studies, uploaded through Orthanc's REST API (not our STOW)."""
    with ThreadPoolExecutor(max_workers=len(TEST_CORPUS)) as pool:
        batches = list(pool.map(lambda spec: list(generate_series(spec)), TEST_CORPUS))
    instances = [instance for batch in batches for instance in batch]
    upload_instances(orthanc, instances)
    return Corpus(instances)


@pytest.fixture(scope="session")
def corpus_auth(orthanc_auth: OrthancServer) -> Corpus:
    """The first test series, uploaded to the authenticated Orthanc."""
    instances = list(generate_series(TEST_CORPUS[0]))
    upload_instances(orthanc_auth, instances)
    return Corpus(instances)


@pytest.fixture(scope="session")
def certificates() -> Iterator[Certificates]:
    """This session's throw-away CA, server, wrong-host, self-signed and client certificates."""
    certs = Certificates()
    yield certs
    shutil.rmtree(certs.folder, ignore_errors=True)


def _front(
    orthanc: OrthancServer, certificate: Path, client_ca: Path | None = None
) -> Iterator[TlsFront]:
    front = TlsFront(orthanc.root, certificate, client_ca=client_ca)
    try:
        front.start()
    except NginxUnavailableError as exc:
        pytest.fail(str(exc), pytrace=False)
    yield front
    front.stop()


@pytest.fixture(scope="session")
def orthanc_https(orthanc: OrthancServer, certificates: Certificates) -> Iterator[TlsFront]:
    """nginx serving `orthanc` over HTTPS with a certificate for 127.0.0.1, signed by our CA."""
    yield from _front(orthanc, certificates.server)


@pytest.fixture(scope="session")
def https_wrong_host(orthanc: OrthancServer, certificates: Certificates) -> Iterator[TlsFront]:
    """Like `orthanc_https`, but its certificate names dicom.example.org, not 127.0.0.1."""
    yield from _front(orthanc, certificates.wrong_host)


@pytest.fixture(scope="session")
def https_self_signed(orthanc: OrthancServer, certificates: Certificates) -> Iterator[TlsFront]:
    """Like `orthanc_https`, but its certificate comes from a CA no client trusts."""
    yield from _front(orthanc, certificates.self_signed)


@pytest.fixture(scope="session")
def https_mtls(orthanc: OrthancServer, certificates: Certificates) -> Iterator[TlsFront]:
    """Like `orthanc_https`, but requiring a client certificate signed by our CA.

    nginx completes the handshake without one and answers HTTP 400 ("No required SSL
    certificate was sent") rather than failing the handshake.
    """
    yield from _front(orthanc, certificates.server, client_ca=certificates.ca)


@pytest.fixture
def forward_proxy() -> Iterator[ForwardProxy]:
    """A recording HTTP forward proxy on loopback (plain-HTTP forwarding and CONNECT)."""
    with ForwardProxy() as proxy:
        yield proxy
