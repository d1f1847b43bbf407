"""GETs sent past httpx's client (`_direct`): the same bytes, and httpx where it has work.

The request target and headers are compared with what httpx itself sends; the
cases where httpx must take over (redirects, cookies, bearer refresh, proxies,
hooks, custom auth) are shown on real sockets, and the searches against Orthanc
are checked to have gone direct.
"""

from __future__ import annotations

import datetime
import socket
from collections.abc import AsyncGenerator, Callable, Generator
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aiodicomweb import AsyncDicomWebClient, BearerTokenAuth
from aiodicomweb._direct import DirectGets
from aiodicomweb._urls import build_query
from tests.support.rawserver import raw_server

pytestmark = pytest.mark.anyio

JSON_HEAD = "HTTP/1.1 200 OK\r\nContent-Type: application/dicom+json\r\nConnection: close\r\n"


def direct_of(client: AsyncDicomWebClient) -> DirectGets:
    direct = client._session.requester.direct
    assert direct is not None
    return direct


def send_answer(head: str, body: bytes = b"[]") -> Callable[[socket.socket], None]:
    def script(sock: socket.socket) -> None:
        sock.sendall(f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body)

    return script


def json_server(path: str) -> Callable[[socket.socket], None]:
    return send_answer(JSON_HEAD)


def through_httpx(client: AsyncDicomWebClient) -> list[str]:
    """Record the URLs that httpx's client sends from now on."""
    sent: list[str] = []
    http = client._session.requester.http
    original = http.send

    async def send(request: httpx.Request, **options: Any) -> httpx.Response:
        sent.append(str(request.url))
        return await original(request, **options)

    http.send = send  # type: ignore[method-assign]
    return sent


def normalised(head: bytes) -> tuple[bytes, list[tuple[bytes, bytes]]]:
    """Request line and headers (names lower-cased, sorted) of a request head."""
    line, *fields = head.split(b"\r\n\r\n", 1)[0].split(b"\r\n")
    headers = []
    for field in fields:
        name, _, value = field.partition(b":")
        headers.append((name.strip().lower(), value.strip()))
    return line, sorted(headers)


# -- the same request as httpx ----------------------------------------------------

_HTTP = httpx.AsyncClient()  # never sends: DirectGets reads its headers and settings


def direct_for(base_url: str) -> DirectGets:
    return DirectGets(_HTTP, None, base_url, None)  # type: ignore[arg-type]


URL_TEXT = st.lists(
    st.sampled_from([chr(c) for c in range(0x20, 0x7F)] + ["é", "\u2603", "%41", "%2f", "/."]),
    max_size=30,
).map("".join)


@settings(max_examples=400, deadline=None)
@given(path=URL_TEXT, query=st.none() | URL_TEXT)
def test_direct_target_is_what_httpx_would_send(path: str, query: str | None) -> None:
    direct = direct_for("http://pacs.test:8042/dw")
    url = f"http://pacs.test:8042/{path}" + (f"?{query}" if query is not None else "")
    target = direct.target(url)
    if target is not None:
        assert target == httpx.URL(url).raw_path


SAFE_TEXT = st.lists(
    st.sampled_from([*"azAZ09-._~!$&'()*+,;=:@/?^", "%41", "%2f", "%7E"]), max_size=30
).map("".join)


@settings(max_examples=200, deadline=None)
@given(path=SAFE_TEXT, query=SAFE_TEXT)
def test_urls_of_safe_characters_go_direct_unchanged(path: str, query: str) -> None:
    direct = direct_for("http://pacs.test/dw")
    url = f"http://pacs.test/dw/{path}?{query}"
    dot_segment = any(s in (".", "..") for s in f"/dw/{path}".split("?")[0].split("/"))
    target = direct.target(url)
    assert (target is None) == dot_segment
    if target is not None:
        assert target == httpx.URL(url).raw_path


@given(
    name=st.text(max_size=12),
    uids=st.lists(
        st.from_regex(r"[1-9][0-9]{0,5}(\.[0-9]{1,5}){0,4}", fullmatch=True), max_size=3
    ),
    day=st.dates(min_value=datetime.date(1900, 1, 1)),
)
def test_every_search_the_client_builds_can_go_direct(name, uids, day) -> None:
    direct = direct_for("http://pacs.test/dw")
    match = {"PatientName": name + "*", "StudyDate": (day, None), "StudyInstanceUID": uids}
    query = build_query(match, include_fields="all", fuzzy=True, limit=3, offset=1)
    url = f"http://pacs.test/dw/studies?{query}"
    assert direct.target(url) == httpx.URL(url).raw_path


def test_dot_segments_and_other_origins_are_left_to_httpx() -> None:
    direct = direct_for("http://pacs.test:80/dw")
    assert direct.target("http://pacs.test:80/dw/../studies") is None
    assert direct.target("http://pacs.test:8042/dw/studies") is None
    assert direct.target("http://other.test:80/dw/studies") is None
    assert direct.target("http://pacs.test:80/dw/studies?x=a b") is None
    assert direct.target("http://pacs.test:80/dw/studies?x=1#f") is None
    assert direct.target("http://pacs.test:80/dw/studies?x=1") == b"/dw/studies?x=1"


CONFIGS = [
    pytest.param({}, id="plain"),
    pytest.param({"auth": ("user", "pw")}, id="basic"),
    pytest.param({"auth": BearerTokenAuth("tok")}, id="bearer"),
    pytest.param({"headers": {"X-Site": "north", "Accept": "text/plain"}}, id="headers"),
    pytest.param({"headers": {"Host": "pacs.example.org"}}, id="virtual-host"),
]


@pytest.mark.parametrize("options", CONFIGS)
async def test_direct_request_head_equals_httpx_request_head(options: dict[str, Any]) -> None:
    heads: list[bytes] = []
    match = {"PatientName": "DOE^J*", "StudyDate": "20200101-20201231"}
    with raw_server(json_server, heads=heads) as url:
        async with AsyncDicomWebClient(url, retry=None, **options) as client:
            sent = through_httpx(client)
            assert await client.search_studies(match, include_fields=["StudyDescription"]) == []
            assert sent == []  # went direct
            client._session.requester.direct = None  # the same call, through httpx's client
            assert await client.search_studies(match, include_fields=["StudyDescription"]) == []
            assert len(sent) == 1
    direct_head, httpx_head = heads
    assert normalised(direct_head) == normalised(httpx_head)


# -- where httpx takes over --------------------------------------------------------


async def test_a_redirect_is_followed_by_httpx_and_later_requests_go_through_it() -> None:
    def route(path: str) -> Callable[[socket.socket], None]:
        if path.startswith("/dicom-web/"):
            moved = path.replace("/dicom-web/", "/moved/", 1)
            return send_answer(f"HTTP/1.1 307 Temporary Redirect\r\nLocation: {moved}\r\n"
                               "Connection: close\r\n", b"")  # fmt: skip
        return send_answer(JSON_HEAD, b'[{"0020000D": {"vr": "UI", "Value": ["1.2.3"]}}]')

    with raw_server(route) as url:
        async with AsyncDicomWebClient(url, retry=None) as client:
            sent = through_httpx(client)
            first = await client.search_studies()
            assert not direct_of(client).enabled
            second = await client.search_studies()
    assert first == second == [{"0020000D": {"vr": "UI", "Value": ["1.2.3"]}}]
    assert [u.rsplit("/dicom-web", 1)[-1] for u in sent] == ["/studies", "/studies"]


async def test_cookies_a_server_sets_are_kept_and_sent_back() -> None:
    heads: list[bytes] = []
    script = send_answer(f"{JSON_HEAD}Set-Cookie: route=node-2; Path=/\r\n")

    with raw_server(lambda path: script, heads=heads) as url:
        async with AsyncDicomWebClient(url, retry=None) as client:
            sent = through_httpx(client)
            await client.search_studies()
            assert client._session.requester.http.cookies.get("route") == "node-2"
            await client.search_studies()
    assert len(sent) == 1  # the second request: httpx sends the cookie
    assert b"cookie: route=node-2" not in heads[0].lower()
    assert b"\r\ncookie: route=node-2\r\n" in heads[1].lower()


async def test_a_bearer_token_refused_with_401_is_refreshed_and_sent_once_more() -> None:
    heads: list[bytes] = []

    def route(path: str) -> Callable[[socket.socket], None]:
        if b"Bearer new" in heads[-1]:
            return send_answer(JSON_HEAD)
        return send_answer("HTTP/1.1 401 Unauthorized\r\nConnection: close\r\n", b"expired")

    refreshed: list[str] = []

    def refresh() -> str:
        refreshed.append("new")
        return "new"

    with raw_server(route, heads=heads) as url:
        auth = BearerTokenAuth("old", refresh=refresh)
        async with AsyncDicomWebClient(url, retry=None, auth=auth) as client:
            sent = through_httpx(client)
            assert await client.search_studies() == []
            assert await client.search_studies() == []
    assert refreshed == ["new"]
    tokens = [h.split(b"Authorization: ", 1)[1].split(b"\r\n", 1)[0] for h in heads]
    assert tokens == [b"Bearer old", b"Bearer new", b"Bearer new"]  # as httpx's auth flow
    assert sent == []  # 401, refresh, 200, then the next search: all direct


async def test_event_hooks_see_every_request() -> None:
    seen: list[str] = []

    async def hook(request: httpx.Request) -> None:
        seen.append(request.url.path)

    with raw_server(json_server) as url:
        async with AsyncDicomWebClient(url, retry=None) as client:
            client._session.requester.http.event_hooks["request"].append(hook)
            await client.search_studies()
    assert seen == ["/dicom-web/studies"]


class _Custom(httpx.Auth):
    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["X-Custom-Auth"] = "1"
        yield request


@pytest.fixture
def proxy_env(monkeypatch: pytest.MonkeyPatch) -> AsyncGenerator[None, None]:
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
    yield None


async def test_environment_proxies_and_custom_auth_keep_requests_on_httpx(proxy_env) -> None:
    async with AsyncDicomWebClient("http://pacs.test/dw") as client:
        assert not direct_of(client).enabled
    async with AsyncDicomWebClient("http://pacs.test/dw", trust_env=False) as client:
        assert direct_of(client).enabled
    async with AsyncDicomWebClient("http://pacs.test/dw", auth=_Custom(), trust_env=False) as c:
        assert not direct_of(c).enabled


async def test_custom_auth_still_applies_to_searches() -> None:
    heads: list[bytes] = []
    with raw_server(json_server, heads=heads) as url:
        async with AsyncDicomWebClient(url, retry=None, auth=_Custom()) as client:
            await client.search_studies()
    assert b"\r\nX-Custom-Auth: 1\r\n" in heads[0]


# -- against Orthanc ---------------------------------------------------------------


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_searches_and_metadata_go_direct_against_orthanc(orthanc_auth, corpus_auth) -> None:
    study = corpus_auth.study_uids[0]
    series = corpus_auth.series_uids(study)[0]
    async with AsyncDicomWebClient(orthanc_auth.dicomweb_url, auth=orthanc_auth.auth) as client:
        sent = through_httpx(client)
        studies = await client.search_studies({"StudyInstanceUID": study})
        instances = await client.search_instances(study, series)
        metadata = await client.retrieve_series_metadata(study, series)
        assert sent == []
        client._session.requester.direct = None
        assert await client.search_studies({"StudyInstanceUID": study}) == studies
        assert await client.search_instances(study, series) == instances
        assert await client.retrieve_series_metadata(study, series) == metadata
        assert len(sent) == 3
    assert len(studies) == 1
    assert len(instances) == len(corpus_auth.series(series)) == len(metadata)
