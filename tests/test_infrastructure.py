"""Smoke tests that prove the test infrastructure itself: Orthanc, auth, corpus."""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request

import pytest

from tests.conftest import AUTH_PASSWORD, AUTH_USER
from tests.support.corpus import Corpus, stored_bytes
from tests.support.dicomgen import TEST_CORPUS
from tests.support.orthanc import OrthancServer


def _get_json(url: str, headers: dict[str, str] | None = None) -> object:
    request = urllib.request.Request(url, headers={"Accept": "application/dicom+json"})
    for name, value in (headers or {}).items():
        request.add_header(name, value)
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read() or b"[]")


def test_orthanc_answers_qido_for_every_uploaded_study(orthanc: OrthancServer, corpus: Corpus):
    studies = _get_json(f"{orthanc.dicomweb_url}/studies")
    assert isinstance(studies, list)
    found = {study["0020000D"]["Value"][0] for study in studies}
    # Other tests add studies of their own to the same server; the corpus must be there.
    assert set(corpus.study_uids) <= found


def test_orthanc_lists_series_with_their_instance_counts(orthanc: OrthancServer, corpus: Corpus):
    for spec in TEST_CORPUS:
        url = f"{orthanc.dicomweb_url}/studies/{spec.study_uid}/series/{spec.series_uid}/instances"
        instances = _get_json(url)
        assert isinstance(instances, list)
        assert len(instances) == spec.instances == len(corpus.series(spec.series_uid))


def test_stored_bytes_are_the_uploaded_bytes(orthanc: OrthancServer, corpus: Corpus):
    for instance in corpus.instances:
        assert stored_bytes(orthanc, instance.sop_instance_uid) == instance.data


def test_corpus_has_multiframe_and_compressed_instances(corpus: Corpus):
    syntaxes = {instance.transfer_syntax for instance in corpus.instances}
    assert "1.2.840.10008.1.2.5" in syntaxes  # RLE Lossless
    assert "1.2.840.10008.1.2.1.99" in syntaxes  # Deflated Explicit VR Little Endian
    assert any(spec.frames > 1 for spec in TEST_CORPUS)


def test_auth_orthanc_refuses_requests_without_credentials(orthanc_auth: OrthancServer):
    with pytest.raises(urllib.error.HTTPError) as caught:
        _get_json(f"{orthanc_auth.dicomweb_url}/studies")
    assert caught.value.code == 401


def test_auth_orthanc_accepts_its_credentials(orthanc_auth: OrthancServer, corpus_auth: Corpus):
    token = base64.b64encode(f"{AUTH_USER}:{AUTH_PASSWORD}".encode()).decode()
    studies = _get_json(
        f"{orthanc_auth.dicomweb_url}/studies", {"Authorization": f"Basic {token}"}
    )
    assert isinstance(studies, list)
    assert {s["0020000D"]["Value"][0] for s in studies} == set(corpus_auth.study_uids)


def test_orthanc_fixture_listens_on_loopback_only_config(orthanc: OrthancServer):
    config = json.loads((orthanc.workdir / "orthanc.json").read_text())
    assert config["RemoteAccessAllowed"] is False
    assert config["DicomServerEnabled"] is False
    assert orthanc.root.startswith("http://127.0.0.1:")
