"""aiodicomweb.compat: dicomweb-client 0.61's API on the core, sync and async.

Against real Orthanc (expected values from the generator and Orthanc's REST API),
against the peer itself (its signatures; its requests, recorded on the wire side
by side with ours), and against scripted servers for retries, sessions and proxies.
"""

from __future__ import annotations

import functools
import inspect
import io
from collections.abc import AsyncIterator, Callable, Generator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import parse_qsl

import anyio
import httpx
import pydicom
import pytest

from aiodicomweb import ClientClosedError, DicomWebHTTPError, InvalidUIDError, StoreFailedError
from aiodicomweb.compat import AsyncDICOMwebClient, DICOMwebClient
from tests.support.corpus import Corpus, delete_study, orthanc_id, stored_bytes
from tests.support.dicomgen import TEST_CORPUS, SeriesSpec, encode, make_dataset
from tests.support.orthanc import OrthancServer
from tests.support.proxy import ForwardProxy
from tests.support.wireserver import WireServer

pytestmark = pytest.mark.anyio

ALPHA, ALPHA_MR, BETA_MULTIFRAME, BETA_RLE, BETA_DEFLATED = TEST_CORPUS
SOP_UID = "00080018"
ANY_SYNTAX = (("application/dicom", "*"),)  # bytes as stored: Orthanc transcodes otherwise
OCTET = ("application/octet-stream",)  # Orthanc refuses the peer's default */* for frames


@pytest.fixture
def anyio_backend() -> str:
    """asyncio only: the core's trio support is tested elsewhere (one trio test below)."""
    return "asyncio"


class Api:
    """Runs a compat method from an async test, whichever client: awaits the async one,
    runs the blocking one in a worker thread."""

    def __init__(self, client: DICOMwebClient | AsyncDICOMwebClient) -> None:
        self.client = client
        self.is_async = isinstance(client, AsyncDICOMwebClient)

    async def __call__(self, name: str, *args: Any, **kwargs: Any) -> Any:
        method = getattr(self.client, name)
        if self.is_async:
            return await method(*args, **kwargs)
        return await anyio.to_thread.run_sync(functools.partial(method, *args, **kwargs))

    async def items(self, name: str, *args: Any, **kwargs: Any) -> list[Any]:
        """The items of an `iter_*` method."""
        method = getattr(self.client, name)
        if self.is_async:
            return [item async for item in method(*args, **kwargs)]
        return await anyio.to_thread.run_sync(lambda: list(method(*args, **kwargs)))


@asynccontextmanager
async def open_api(kind: str, url: str) -> AsyncIterator[Api]:
    if kind == "sync":
        with DICOMwebClient(url) as client:
            yield Api(client)
    else:
        async with AsyncDICOMwebClient(url) as aclient:
            yield Api(aclient)


@pytest.fixture(params=["sync", "async"])
async def api(request: pytest.FixtureRequest, orthanc: OrthancServer, corpus: Corpus):
    async with open_api(request.param, orthanc.dicomweb_url) as opened:
        yield opened


def uids(results: list[dict[str, Any]], tag: str = SOP_UID) -> set[str]:
    return {r[tag]["Value"][0] for r in results}


def written(ds: pydicom.Dataset) -> bytes:
    """A Dataset written back, as the peer's own tests compare it."""
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, ds)
    return buffer.getvalue()


# -- the peer's API ----------------------------------------------------------------------


def peer_module(name: str) -> Any:
    """A module of the peer; skips without it (it needs pydicom 3: not in the 2.4 run)."""
    return pytest.importorskip(name, exc_type=ImportError)


def peer_methods() -> list[tuple[str, Callable[..., Any]]]:
    peer = peer_module("dicomweb_client.api").DICOMwebClient
    return [
        (name, member)
        for name, member in inspect.getmembers(peer, inspect.isfunction)
        if not name.startswith("_") or name == "__init__"
    ]


def parameters(function: Callable[..., Any]) -> list[tuple[str, object, object]]:
    return [(p.name, p.kind, p.default) for p in inspect.signature(function).parameters.values()]


@pytest.mark.parametrize("ours", [DICOMwebClient, AsyncDICOMwebClient])
def test_every_peer_method_has_the_same_parameters_and_defaults(ours: type) -> None:
    methods = peer_methods()
    assert len(methods) == 27  # 22 transactions, set_* and lookup_* (2 each), __init__
    for name, peer_method in methods:
        assert parameters(getattr(ours, name)) == parameters(peer_method), name


def test_the_async_twin_has_coroutines_and_async_iterators() -> None:
    for name, _ in peer_methods():
        method = getattr(AsyncDICOMwebClient, name)
        if name.startswith("iter_"):
            assert inspect.isasyncgenfunction(method), name
        elif not name.startswith(("set_", "lookup_", "__")):
            assert inspect.iscoroutinefunction(method), name


async def test_both_satisfy_the_peers_client_protocol() -> None:
    protocol = peer_module("dicomweb_client.protocol").DICOMClient
    with DICOMwebClient("http://127.0.0.1:1/dicom-web") as client:
        assert isinstance(client, protocol)
    async with AsyncDICOMwebClient("http://127.0.0.1:1/dicom-web") as aclient:
        assert isinstance(aclient, protocol)


def test_url_attributes_as_the_peer_sets_them() -> None:
    url = "https://pacs.example.org/dcm4chee-arc/rs"
    with DICOMwebClient(url, wado_url_prefix="wado") as client:
        attributes = (client.base_url, client.scheme, client.protocol, client.host, client.port)
        prefixes = (client.url_prefix, client.wado_url_prefix, client.qido_url_prefix)
    assert attributes == (url, "https", "https", "pacs.example.org", 443)
    assert prefixes == ("/dcm4chee-arc/rs", "wado", None)


@pytest.mark.parametrize(
    ("arguments", "error"),
    [
        pytest.param({"url": "ftp://pacs/dicom-web"}, ValueError, id="not-http"),
        pytest.param({"qido_url_prefix": ""}, ValueError, id="empty-prefix"),
        pytest.param({"callback": print}, TypeError, id="requests-hook"),
    ],
)
def test_constructor_refuses_what_the_peer_refuses_or_cannot_carry(arguments, error) -> None:
    with pytest.raises(error):
        DICOMwebClient(**{"url": "http://127.0.0.1:1/dicom-web", **arguments})


async def test_a_closed_client_stays_closed_and_reprs_hide_credentials() -> None:
    url = "http://user:s3cret@127.0.0.1:1/dicom-web"
    client, aclient = DICOMwebClient(url), AsyncDICOMwebClient(url)
    assert "s3cret" not in repr(client) + repr(aclient)
    client.close()
    await aclient.aclose()
    client.set_chunk_size(4096)  # a new setting does not reopen it
    with pytest.raises(ClientClosedError):
        client.search_for_studies()
    with pytest.raises(ClientClosedError):
        await aclient.search_for_studies()
    with pytest.raises(ValueError) as caught:
        DICOMwebClient("ftp://user:s3cret@pacs/dicom-web")
    assert "s3cret" not in str(caught.value)


def test_lookups() -> None:
    assert DICOMwebClient.lookup_tag("StudyInstanceUID") == "0020000D"
    assert DICOMwebClient.lookup_tag("PixelData") == "7FE00010"
    assert AsyncDICOMwebClient.lookup_keyword("00080018") == "SOPInstanceUID"
    assert DICOMwebClient.lookup_keyword(0x7FE00010) == "PixelData"
    with pytest.raises(KeyError):
        DICOMwebClient.lookup_tag("NoSuchKeyword")
    with pytest.raises(KeyError):
        DICOMwebClient.lookup_keyword("00091234")


# -- QIDO-RS against Orthanc -------------------------------------------------------------


async def test_search_for_studies_with_filters_fields_and_fuzzy(api: Api) -> None:
    everything = await api("search_for_studies")
    found = await api("search_for_studies", fuzzymatching=True, fields=["StudyDescription"],
                      search_filters={"PatientName": "TEST^ALPHA"})  # fmt: skip
    assert uids(everything, "0020000D") >= {ALPHA.study_uid, BETA_RLE.study_uid}
    assert uids(found, "0020000D") == {ALPHA.study_uid}
    assert found[0]["00081030"]["Value"] == [ALPHA.study_description]


async def test_search_for_series_and_instances_at_each_scope(api: Api) -> None:
    assert len(await api("search_for_series", ALPHA.study_uid)) == 2
    found = await api("search_for_series", ALPHA.study_uid, search_filters={"Modality": "MR"})
    assert uids(found, "0020000E") == {ALPHA_MR.series_uid}
    assert len(await api("search_for_instances", ALPHA.study_uid)) == 17
    assert len(await api("search_for_instances", ALPHA.study_uid, ALPHA_MR.series_uid)) == 5


async def test_limit_offset_and_get_remaining(api: Api, corpus: Corpus) -> None:
    scope = (ALPHA.study_uid, ALPHA.series_uid)
    first = await api("search_for_instances", *scope, limit=5)
    second = await api("search_for_instances", *scope, limit=5, offset=5)
    every = await api("search_for_instances", *scope, limit=5, get_remaining=True)
    rest = await api("search_for_instances", *scope, limit=5, offset=3, get_remaining=True)
    assert len(first) == len(second) == 5 and not uids(first) & uids(second)
    assert uids(every) == {i.sop_instance_uid for i in corpus.series(ALPHA.series_uid)}
    assert len(every) == ALPHA.instances and len(rest) == ALPHA.instances - 3


# -- WADO-RS against Orthanc -------------------------------------------------------------


@pytest.mark.parametrize("spec", TEST_CORPUS, ids=["ct", "mr", "multiframe", "rle", "deflated"])
async def test_retrieve_instance_is_the_stored_instance(api: Api, orthanc, spec: SeriesSpec):
    sop = f"{spec.series_uid}.1"
    ds = await api("retrieve_instance", spec.study_uid, spec.series_uid, sop)
    assert isinstance(ds, pydicom.Dataset)
    assert written(ds) == stored_bytes(orthanc, sop)


async def test_retrieve_series_and_study_are_the_stored_instances(api: Api, orthanc, corpus):
    series = await api("retrieve_series", ALPHA_MR.study_uid, ALPHA_MR.series_uid)
    study = await api("retrieve_study", BETA_RLE.study_uid, media_types=ANY_SYNTAX)
    for datasets, instances in ((series, corpus.series(ALPHA_MR.series_uid)),
                                (study, corpus.study(BETA_RLE.study_uid))):  # fmt: skip
        expected = sorted(stored_bytes(orthanc, i.sop_instance_uid) for i in instances)
        assert sorted(written(ds) for ds in datasets) == expected


async def test_iter_series_and_iter_study_yield_datasets(api: Api, corpus: Corpus) -> None:
    series = await api.items("iter_series", ALPHA_MR.study_uid, ALPHA_MR.series_uid)
    study = await api.items("iter_study", BETA_RLE.study_uid, media_types=ANY_SYNTAX)
    assert {str(ds.SOPInstanceUID) for ds in series} == {
        i.sop_instance_uid for i in corpus.series(ALPHA_MR.series_uid)
    }
    assert len(study) == len(corpus.study(BETA_RLE.study_uid))


async def test_sync_iter_series_is_a_generator_that_asks_at_once(orthanc, corpus) -> None:
    with DICOMwebClient(orthanc.dicomweb_url) as client:
        iterator = client.iter_series(ALPHA_MR.study_uid, ALPHA_MR.series_uid)
        assert isinstance(iterator, Generator)
        assert len(list(iterator)) == ALPHA_MR.instances
        with pytest.raises(DicomWebHTTPError) as caught:
            client.iter_series(ALPHA.study_uid, "1.2.3.4")  # the peer raises here, not later
    assert caught.value.status == 404


async def test_metadata_at_every_level(api: Api) -> None:
    sop = f"{ALPHA_MR.series_uid}.3"
    study = await api("retrieve_study_metadata", ALPHA.study_uid)
    series = await api("retrieve_series_metadata", ALPHA.study_uid, ALPHA_MR.series_uid)
    instance = await api("retrieve_instance_metadata", ALPHA.study_uid, ALPHA_MR.series_uid, sop)
    assert len(study) == ALPHA.instances + ALPHA_MR.instances
    assert len(series) == ALPHA_MR.instances
    assert instance[SOP_UID]["Value"] == [sop]


async def test_frames_retrieved_and_iterated(api: Api) -> None:
    spec = BETA_MULTIFRAME
    where = (spec.study_uid, spec.series_uid, f"{spec.series_uid}.1")
    frames = await api("retrieve_instance_frames", *where, [1, 3], media_types=OCTET)
    streamed = await api.items("iter_instance_frames", *where, [2], media_types=OCTET)
    pixels, size = make_dataset(spec, 1).PixelData, spec.rows * spec.columns * 2
    assert frames == [pixels[:size], pixels[2 * size : 3 * size]]
    assert streamed == [pixels[size : 2 * size]]


async def test_rendered_instance_frames_and_series(api: Api) -> None:
    spec = BETA_MULTIFRAME
    instance = (ALPHA.study_uid, ALPHA.series_uid, f"{ALPHA.series_uid}.1")
    jpeg = await api("retrieve_instance_rendered", *instance)  # the peer's Accept: */*
    png = await api("retrieve_instance_rendered", *instance, media_types=("image/png",),
                    params={"viewport": "64,64"})  # fmt: skip
    frames = await api("retrieve_instance_frames_rendered", spec.study_uid, spec.series_uid,
                       f"{spec.series_uid}.1", [2], media_types=("image/jpeg",))  # fmt: skip
    series = await api("retrieve_series_rendered", ALPHA.study_uid, ALPHA.series_uid)
    assert jpeg.startswith(b"\xff\xd8\xff") and png.startswith(b"\x89PNG")
    assert frames.startswith(b"\xff\xd8\xff") and series.startswith(b"\xff\xd8\xff")
    assert isinstance(png, bytes)


async def test_bulkdata_retrieved_iterated_and_ranged(api: Api) -> None:
    sop = f"{ALPHA.series_uid}.2"
    meta = await api("retrieve_instance_metadata", ALPHA.study_uid, ALPHA.series_uid, sop)
    uri = meta["7FE00010"]["BulkDataURI"]
    pixels = make_dataset(ALPHA, 2).PixelData
    assert await api("retrieve_bulkdata", uri, media_types=OCTET) == [pixels]
    assert await api.items("iter_bulkdata", uri, media_types=OCTET) == [pixels]
    assert await api("retrieve_bulkdata", uri, OCTET, (10, 19)) == [pixels[10:20]]


async def test_an_unknown_series_is_a_404_and_a_bad_uid_a_value_error(api: Api) -> None:
    with pytest.raises(DicomWebHTTPError) as caught:
        await api("retrieve_series", ALPHA.study_uid, "1.2.3.4")
    with pytest.raises(InvalidUIDError):
        await api("retrieve_series", ALPHA.study_uid, "../../etc")
    assert caught.value.status == 404


async def test_a_changed_prefix_takes_effect_at_the_next_call(api: Api) -> None:
    api.client.wado_url_prefix = "nowhere"
    with pytest.raises(DicomWebHTTPError) as caught:
        await api("retrieve_series_metadata", ALPHA.study_uid, ALPHA_MR.series_uid)
    api.client.wado_url_prefix = None
    assert len(await api("retrieve_series_metadata", ALPHA.study_uid, ALPHA_MR.series_uid)) == 5
    assert caught.value.status == 404


# -- STOW-RS and DELETE against Orthanc ------------------------------------------------


@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_store_instances_then_delete_is_refused_by_orthanc(kind: str, orthanc, corpus):
    spec = SeriesSpec(study=910 + (kind == "async"), series=1, instances=2, rows=16, columns=16)
    datasets = [make_dataset(spec, n) for n in (1, 2)]
    try:
        async with open_api(kind, orthanc.dicomweb_url) as api:
            response = await api("store_instances", datasets, spec.study_uid)
            with pytest.raises(DicomWebHTTPError) as caught:
                await api("delete_study", spec.study_uid)
        stored = {str(item.ReferencedSOPInstanceUID) for item in response.ReferencedSOPSequence}
        assert stored == {str(ds.SOPInstanceUID) for ds in datasets}
        assert list(response.FailedSOPSequence) == []
        assert response.RetrieveURL.endswith(f"/studies/{spec.study_uid}")
        assert orthanc_id(orthanc, f"{spec.series_uid}.2", "Instance") is not None
        assert caught.value.status == 405  # Orthanc's plugin has no DICOMweb DELETE
    finally:
        delete_study(orthanc, spec.study_uid)


async def test_store_refused_whole_raises_where_the_peer_raises(api: Api, orthanc) -> None:
    spec = SeriesSpec(study=912, series=1, instances=1, rows=16, columns=16)
    try:
        with pytest.raises(StoreFailedError):  # Orthanc: 409, another study's instance
            await api("store_instances", [make_dataset(spec, 1)], ALPHA.study_uid)
        assert orthanc_id(orthanc, spec.study_uid, "Study") is None
    finally:
        delete_study(orthanc, spec.study_uid)


# -- retries, sessions and proxies on scripted servers ---------------------------------


@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_set_http_retry_params(kind: str) -> None:
    calls: list[str] = []

    def unavailable(request: httpx.Request) -> httpx.Response:
        calls.append(request.url.path)
        return httpx.Response(503)

    with WireServer(unavailable) as url:
        async with open_api(kind, url) as api:
            api.client.set_http_retry_params(max_attempts=3, wait_exponential_multiplier=10)
            with pytest.raises(DicomWebHTTPError) as retried:
                await api("search_for_studies")
            api.client.set_http_retry_params(retry=False)
            with pytest.raises(DicomWebHTTPError):
                await api("search_for_studies")
    assert retried.value.status == 503
    assert len(calls) == 3 + 1


async def test_a_requests_session_and_headers_carry_over() -> None:
    requests = pytest.importorskip("requests")
    heads: list[httpx.Headers] = []

    def record(request: httpx.Request) -> httpx.Response:
        heads.append(request.headers)
        return httpx.Response(200, json=[])

    session = requests.Session()
    session.headers["X-Site"] = "north"
    session.auth = ("user", "pass")
    with WireServer(record) as url:
        client = DICOMwebClient(url, session=session, headers={"X-Token": "t"})
        await anyio.to_thread.run_sync(client.search_for_studies)
        client.close()
    assert (heads[0]["x-site"], heads[0]["x-token"]) == ("north", "t")
    assert heads[0]["authorization"].startswith("Basic ")


async def test_requests_style_proxies(forward_proxy: ForwardProxy) -> None:
    def empty(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=[])

    with WireServer(empty) as url:
        proxies = {"http": f"127.0.0.1:{forward_proxy.port}"}  # requests adds http://
        async with AsyncDICOMwebClient(url, proxies=proxies) as client:
            await client.search_for_studies()
    assert forward_proxy.requests == [f"GET {url}/studies HTTP/1.1"]


@pytest.mark.parametrize("anyio_backend", ["trio"])
async def test_the_async_twin_on_trio(orthanc, corpus) -> None:
    async with AsyncDICOMwebClient(orthanc.dicomweb_url) as client:
        found = await client.search_for_series(ALPHA.study_uid)
        datasets = [ds async for ds in client.iter_series(ALPHA_MR.study_uid, ALPHA_MR.series_uid)]
    assert len(found) == 2 and len(datasets) == ALPHA_MR.instances


# -- the peer's requests, side by side with ours -------------------------------------


S, SE, SOP = "1.2.3", "1.2.3.4", "1.2.3.4.5"
WIRE_SPEC = BETA_MULTIFRAME
FILTERS = {"PatientName": "DOE^J*", "StudyDate": "20240101-20241231"}
EXTRA = {"k": ["a", "b"], "x": "y"}
EXPLICIT = "1.2.840.10008.1.2.1"
WIRE_CALLS = [
    ("search_for_studies", (), {}),
    ("search_for_studies", (), {"fuzzymatching": True, "limit": 2, "offset": 1,
                                "search_filters": FILTERS, "fields": ["StudyDescription"],
                                "additional_params": EXTRA}),
    ("search_for_series", (S,), {"search_filters": {"Modality": "CT"}}),
    ("search_for_instances", (S, SE), {"limit": 10}),
    ("search_for_instances", (), {"get_remaining": True, "limit": 10}),
    ("retrieve_study", (S,), {}),
    ("retrieve_series", (S, SE), {"media_types": ANY_SYNTAX}),
    ("retrieve_series", (S, SE), {"media_types": (("application/dicom", EXPLICIT),),
                                  "additional_params": {"a": "1"}}),
    ("iter_series", (S, SE), {}),
    ("iter_study", (S,), {}),
    ("retrieve_instance", (S, SE, SOP), {}),
    ("retrieve_instance", (S, SE, SOP), {"media_types": ("application/dicom",)}),
    ("retrieve_study_metadata", (S,), {}),
    ("retrieve_series_metadata", (S, SE), {}),
    ("retrieve_instance_metadata", (S, SE, SOP), {"additional_params": {"includefield": "all"}}),
    ("retrieve_instance_frames", (S, SE, SOP, [1, 2]), {}),
    ("retrieve_instance_frames", (S, SE, SOP, [1]), {"media_types": OCTET}),
    ("retrieve_instance_frames", (S, SE, SOP, [1]), {"media_types": (
        ("image/jpeg", "1.2.840.10008.1.2.4.50"), ("application/octet-stream", "*"))}),
    ("iter_instance_frames", (S, SE, SOP, [1]), {"media_types": OCTET}),
    ("retrieve_bulkdata", ("BULK",), {}),
    ("retrieve_bulkdata", ("BULK",), {"media_types": OCTET, "byte_range": (0, 99)}),
    ("iter_bulkdata", ("BULK",), {}),
    ("retrieve_instance_rendered", (S, SE, SOP), {}),
    ("retrieve_instance_rendered", (S, SE, SOP), {"media_types": ("image/jpeg",),
                                                  "params": {"quality": 90}}),
    ("retrieve_series_rendered", (S, SE), {"media_types": ("image/jpeg",)}),
    ("retrieve_instance_frames_rendered", (S, SE, SOP, [1, 2]), {"media_types": ("image/png",)}),
    ("store_instances", ("DATASETS",), {}),
    ("store_instances", ("DATASETS", S), {"additional_params": {"a": "1"}}),
    ("delete_study", (S,), {}),
    ("delete_series", (S, SE), {"additional_params": {"a": ["1", "2"]}}),
    ("delete_instance", (S, SE, SOP), {}),
]  # fmt: skip


def _multipart(kind: str, body: bytes) -> httpx.Response:
    framed = f"--b0\r\nContent-Type: {kind}\r\n\r\n".encode() + body + b"\r\n--b0--\r\n"
    content_type = f'multipart/related; type="{kind}"; boundary=b0'
    return httpx.Response(200, headers={"Content-Type": content_type}, content=framed)


def _answer(request: httpx.Request) -> httpx.Response:
    """What a server would answer each kind of request, enough for both clients."""
    path, json_type = request.url.path, {"Content-Type": "application/dicom+json"}
    if request.method == "POST":
        stored = {
            "00081150": {"vr": "UI", "Value": [WIRE_SPEC.sop_class_uid]},
            "00081155": {"vr": "UI", "Value": [f"{WIRE_SPEC.series_uid}.1"]},
        }
        return httpx.Response(200, headers=json_type,
                              json={"00081199": {"vr": "SQ", "Value": [stored]}})  # fmt: skip
    if request.method == "DELETE":
        return httpx.Response(200)
    if path.endswith("/rendered"):
        return httpx.Response(200, headers={"Content-Type": "image/jpeg"}, content=b"\xff\xd8")
    if "/frames/" in path or "/bulk/" in path:
        return _multipart("application/octet-stream", bytes(8))
    if path.endswith("/metadata"):
        return httpx.Response(200, headers=json_type, json=[{}])
    if path.rsplit("/", 1)[-1] in ("studies", "series", "instances"):
        return httpx.Response(200, headers=json_type, json=[])
    return _multipart(
        "application/dicom", encode(make_dataset(WIRE_SPEC, 1), WIRE_SPEC.transfer_syntax)
    )


def _seen(request: httpx.Request) -> tuple[object, ...]:
    """A request as the comparison sees it: parameter order and STOW boundaries aside,
    and of a JSON Accept only the first type (ours asks the wider list on a 406)."""
    query = sorted(parse_qsl(request.url.query.decode(), keep_blank_values=True))
    accept = request.headers.get("accept", "")
    if request.method == "POST" or accept.startswith("application/dicom+json"):
        accept = accept.split(",")[0] if request.method != "POST" else "(any)"
    content_type = request.headers.get("content-type", "").split("; boundary")[0]
    return (request.method, request.url.path, query, accept, content_type,
            request.headers.get("range"))  # fmt: skip


@pytest.mark.parametrize(("name", "args", "kwargs"), WIRE_CALLS,
                         ids=[f"{n}-{i}" for i, (n, _, _) in enumerate(WIRE_CALLS)])  # fmt: skip
def test_the_same_requests_as_the_peer(name: str, args: tuple[Any, ...], kwargs: dict[str, Any]):
    peer_class = peer_module("dicomweb_client.api").DICOMwebClient
    seen: list[tuple[object, ...]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(_seen(request))
        return _answer(request)

    with WireServer(handler) as url:
        root = url.removesuffix("/dicom-web")
        bulk = f"{root}/studies/{S}/series/{SE}/instances/{SOP}/bulk/7fe00010"
        arguments = [bulk if a == "BULK" else [make_dataset(WIRE_SPEC, 1)] if a == "DATASETS"
                     else a for a in args]  # fmt: skip
        requests = []
        with DICOMwebClient(root) as ours:
            for client in (peer_class(root), ours):
                seen.clear()
                result = getattr(client, name)(*arguments, **kwargs)
                if name.startswith("iter_"):
                    list(result)
                requests.append(list(seen))
    assert requests[1] == requests[0]
