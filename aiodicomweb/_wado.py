"""WADO-RS: instances as parts or bytes, metadata, frames, bulk data, rendered images."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urljoin, urlsplit

from aiodicomweb._dicom_json import JSON
from aiodicomweb._exceptions import DicomWebUsageError, UnexpectedResponseError
from aiodicomweb._media import (
    OCTET_STREAM,
    MediaTypes,
    accepted_types,
    checked_media_type,
    media_type,
    multipart_accept,
)
from aiodicomweb._multipart_stream import MultipartStream
from aiodicomweb._session import Session
from aiodicomweb._urls import redact_url, rendered_query, resource_path, with_query

__all__ = [
    "RenderedImage",
    "open_bulkdata",
    "open_frames",
    "retrieve_bulkdata",
    "retrieve_frames",
    "retrieve_instance",
    "retrieve_instance_metadata",
    "retrieve_metadata",
    "retrieve_parts",
    "retrieve_rendered",
    "stream_bulkdata",
]

logger = logging.getLogger("aiodicomweb")

ByteRange = tuple[int, int | None]


class RenderedImage(bytes):
    """A rendered image's bytes, with the media type the server sent (`media_type`)."""

    media_type: str

    def __new__(cls, content: bytes, media_type: str) -> RenderedImage:
        image = super().__new__(cls, content)
        image.media_type = media_type
        return image


async def retrieve_parts(
    session: Session, path: str, transfer_syntax: str | None, query: str = ""
) -> list[bytes]:
    """Every instance at a study, series or instance `path`, as bytes in memory."""
    async with session.open_parts(path, transfer_syntax, query=query) as parts:
        return [await part.read() async for part in parts]


async def retrieve_instance(
    session: Session, path: str, transfer_syntax: str | None, query: str = ""
) -> bytes:
    """One instance's bytes; a multipart answer of one part or a bare DICOM body."""
    bodies = await retrieve_parts(session, path, transfer_syntax, query)
    if len(bodies) != 1:
        uid = path.rsplit("/", 1)[-1]
        raise UnexpectedResponseError(
            f"instance {uid}: expected one part, the server sent {len(bodies)}"
        )
    return bodies[0]


async def retrieve_metadata(session: Session, path: str, query: str = "") -> list[JSON]:
    """The metadata of every instance at `path`."""
    return await session.datasets(with_query(f"{session.roots.wado}{path}/metadata", query))


async def retrieve_instance_metadata(session: Session, path: str, query: str = "") -> JSON:
    """The metadata of the one instance at `path`."""
    datasets = await retrieve_metadata(session, path, query)
    if len(datasets) != 1:
        uid = path.rsplit("/", 1)[-1]
        raise UnexpectedResponseError(
            f"metadata of {uid}: expected one dataset, got {len(datasets)}"
        )
    return datasets[0]


@asynccontextmanager
async def open_frames(
    session: Session,
    study_uid: str,
    series_uid: str,
    sop_uid: str,
    frames: Sequence[int],
    media_types: MediaTypes,
    transfer_syntax: str | None,
    query: str = "",
) -> AsyncIterator[MultipartStream]:
    """The parts of a frames request (see `AsyncDicomWebClient.stream_frames`)."""
    path = resource_path(study_uid, series_uid, sop_uid) + "/frames/" + _frame_list(frames)
    pairs = [
        # An image type has its own transfer syntax; servers refuse "*" with it.
        (kind, None if syntax == "*" and kind.lower() != OCTET_STREAM else syntax)
        for kind, syntax in accepted_types(media_types, transfer_syntax)
    ]
    url = with_query(session.roots.wado + path, query)
    async with _open(session, url, pairs) as (parts, _):
        yield parts


async def retrieve_frames(
    session: Session,
    study_uid: str,
    series_uid: str,
    sop_uid: str,
    frames: Sequence[int],
    media_types: MediaTypes,
    transfer_syntax: str | None,
    query: str = "",
) -> list[bytes]:
    """See `AsyncDicomWebClient.retrieve_frames`."""
    opened = open_frames(
        session, study_uid, series_uid, sop_uid, frames, media_types, transfer_syntax, query
    )
    async with opened as parts:
        return [await part.read() async for part in parts]


@asynccontextmanager
async def open_bulkdata(
    session: Session,
    uri: str,
    byte_range: ByteRange | None,
    media_types: MediaTypes,
    query: str = "",
) -> AsyncIterator[tuple[MultipartStream, bool]]:
    """The parts of a bulk data request, and whether the server sent the whole body
    where a byte range was asked (200, not 206)."""
    wado = session.roots.wado
    url = with_query(urljoin(wado + "/", uri), query)
    if urlsplit(url)[:2] != urlsplit(wado)[:2]:
        raise DicomWebUsageError(f"bulk data URI on another origin: {redact_url(url)!r}")
    headers = {}
    if byte_range is not None:
        first, last = byte_range
        if first < 0 or (last is not None and last < first):
            raise DicomWebUsageError(f"invalid byte range: {byte_range!r}")
        headers["Range"] = f"bytes={first}-{'' if last is None else last}"
    pairs = accepted_types(media_types, None)
    async with _open(session, url, pairs, headers) as (parts, status):
        yield parts, byte_range is not None and status != 206


@asynccontextmanager
async def stream_bulkdata(
    session: Session,
    uri: str,
    byte_range: ByteRange | None,
    media_types: MediaTypes,
    query: str = "",
) -> AsyncIterator[MultipartStream]:
    """The parts of a bulk data request; a range the server ignored is an error here,
    since a stream cannot be cut to it (`retrieve_bulkdata` cuts its answer)."""
    async with open_bulkdata(session, uri, byte_range, media_types, query) as (parts, whole):
        if whole:
            raise UnexpectedResponseError(
                f"bulk data {uri}: the server ignored the byte range; "
                "retrieve_bulkdata cuts its answer to the range"
            )
        yield parts


async def retrieve_bulkdata(
    session: Session,
    uri: str,
    byte_range: ByteRange | None,
    media_types: MediaTypes,
    query: str = "",
) -> list[bytes]:
    """See `AsyncDicomWebClient.retrieve_bulkdata`."""
    async with open_bulkdata(session, uri, byte_range, media_types, query) as (parts, whole):
        bodies = [await part.read() async for part in parts]
    if not whole or byte_range is None:
        return bodies
    if len(bodies) != 1:
        raise UnexpectedResponseError(
            f"bulk data {uri}: a byte range was asked, the server sent {len(bodies)} whole parts"
        )
    first, last = byte_range
    logger.warning("bulk data %s: the server ignored the byte range; cut to it", uri)
    return [bodies[0][first : None if last is None else last + 1]]


@asynccontextmanager
async def _open(
    session: Session,
    url: str,
    pairs: list[tuple[str, str | None]],
    headers: Mapping[str, str] | None = None,
) -> AsyncIterator[tuple[MultipartStream, int]]:
    accept = ", ".join(multipart_accept(kind, syntax) for kind, syntax in pairs)
    single = tuple(kind.lower() for kind, _ in pairs)  # a bare body of these is one part
    async with session.stream(url, accept, headers=headers, ok=(200, 206)) as response:
        parts = MultipartStream(
            response,
            description=f"GET {redact_url(url)}",
            single_part_types=single,
            max_parts=session.max_parts,
        )
        yield parts, response.status_code


def _frame_list(frames: Sequence[int]) -> str:
    if (
        isinstance(frames, (int, str))
        or not frames
        or any(isinstance(f, bool) or not isinstance(f, (int, float)) for f in frames)
        or any(int(f) != f or f < 1 for f in frames)
    ):
        raise DicomWebUsageError(f"frame numbers must be integers from 1: {frames!r}")
    return ",".join(str(int(f)) for f in frames)


async def retrieve_rendered(
    session: Session,
    kind: str,
    path: str,
    frames: int | Sequence[int] | None,
    media_types: str | Sequence[str],
    viewport: tuple[int, int] | None,
    window: tuple[Any, ...] | None,
    quality: int | None,
    query: str = "",
) -> RenderedImage:
    """A `rendered` or `thumbnail` image of the resource at `path`, or of frames.

    An answer of another media type than asked is returned as it is (logged).
    """
    if frames is not None:
        if "/instances/" not in path:
            raise DicomWebUsageError("frames need an instance")
        path += "/frames/" + _frame_list([frames] if isinstance(frames, int) else frames)
    if window is not None and len(window) == 2:
        window = (*window, "linear")  # the standard wants the function; servers refuse 2
    wanted = [media_types] if isinstance(media_types, str) else list(media_types)
    if not wanted:
        raise DicomWebUsageError("no media type given")
    url = with_query(
        f"{session.roots.wado}{path}/{kind}", rendered_query(viewport, window, quality), query
    )
    headers = {"Accept": ", ".join(checked_media_type(m) for m in wanted)}
    response = await session.request("GET", url, headers=headers)
    got = media_type(response.headers.get("content-type"))
    if not any(_matches(got, m.lower()) for m in wanted):
        logger.warning("GET %s: asked for %s, got %s", redact_url(url), ", ".join(wanted),
                       got or "no Content-Type")  # fmt: skip
    return RenderedImage(response.content, got)


def _matches(got: str, wanted: str) -> bool:
    return wanted in (got, "*/*") or (wanted.endswith("/*") and got.startswith(wanted[:-1]))
