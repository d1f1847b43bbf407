"""Fixtures: real Orthanc servers on loopback and the generated test corpus."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.support.corpus import Corpus, upload_instances
from tests.support.dicomgen import TEST_CORPUS, generate_series
from tests.support.orthanc import OrthancServer, OrthancUnavailableError

AUTH_USER = "radiologist"
AUTH_PASSWORD = "s3cret-Pa55word"


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
