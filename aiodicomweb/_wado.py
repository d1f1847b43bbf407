"""WADO-RS: instances as parts or bytes, metadata, frames, bulk data, rendered images."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urljoin, urlsplit

from aiodicomweb._dicom_json import JSON
from aiodicomweb._exceptions import DicomWebUsageError, UnexpectedResponseError
from aiodicomweb._media import OCTET_STREAM, checked_media_type, media_type, multipart_accept
from aiodicomweb._multipart_stream import MultipartStream
from aiodicomweb._session import Session
from aiodicomweb._urls import redact_url, rendered_query, resource_path

logger = logging.getLogger("aiodicomweb")

__all__ = [
    "retrieve_bulkdata",
    "retrieve_frames",
    "retrieve_instance",
    "retrieve_instance_metadata",
    "retrieve_metadata",
    "retrieve_parts",
    "retrieve_rendered",
]


async def retrieve_parts(session: Session, path: str, transfer_syntax: str | None) -> list[bytes]:
    """Every instance at a study, series or instance `path`, as bytes in memory."""
    async with session.open_parts(path, transfer_syntax) as parts:
        return [await part.read() async for part in parts]


async def retrieve_instance(session: Session, path: str, transfer_syntax: str | None) -> bytes:
    """One instance's bytes; a multipart answer of one part or a bare DICOM body."""
    bodies = await retrieve_parts(session, path, transfer_syntax)
    if len(bodies) != 1:
        uid = path.rsplit("/", 1)[-1]
        raise UnexpectedResponseError(
            f"instance {uid}: expected one part, the server sent {len(bodies)}"
        )
    return bodies[0]


async def retrieve_metadata(session: Session, path: str) -> list[JSON]:
    """The metadata of every instance at `path`."""
    return await session.datasets(f"{session.roots.wado}{path}/metadata")


async def retrieve_instance_metadata(session: Session, path: str) -> JSON:
    """The metadata of the one instance at `path`."""
    datasets = await retrieve_metadata(session, path)
    if len(datasets) != 1:
        uid = path.rsplit("/", 1)[-1]
        raise UnexpectedResponseError(
            f"metadata of {uid}: expected one dataset, got {len(datasets)}"
        )
    return datasets[0]


async def retrieve_frames(
    session: Session,
    study_uid: str,
    series_uid: str,
    sop_uid: str,
    frames: Sequence[int],
    media_type: str,
    transfer_syntax: str | None,
) -> list[bytes]:
    """See `AsyncDicomWebClient.retrieve_frames`."""
    if not frames or any(isinstance(f, bool) or int(f) != f or f < 1 for f in frames):
        raise DicomWebUsageError(f"frame numbers must be integers from 1: {list(frames)!r}")
    path = resource_path(study_uid, series_uid, sop_uid)
    url = f"{session.roots.wado}{path}/frames/{','.join(str(int(f)) for f in frames)}"
    if transfer_syntax == "*" and media_type.lower() != OCTET_STREAM:
        transfer_syntax = None  # an image type has its own; servers refuse "*" with it
    parts, _ = await _read_parts(session, url, multipart_accept(media_type, transfer_syntax))
    return parts


async def retrieve_bulkdata(
    session: Session, uri: str, byte_range: tuple[int, int | None] | None, media_type: str
) -> list[bytes]:
    """See `AsyncDicomWebClient.retrieve_bulkdata`."""
    wado = session.roots.wado
    url = urljoin(wado + "/", uri)
    if urlsplit(url)[:2] != urlsplit(wado)[:2]:
        raise DicomWebUsageError(f"bulk data URI on another origin: {redact_url(url)!r}")
    headers = {}
    if byte_range is not None:
        first, last = byte_range
        if first < 0 or (last is not None and last < first):
            raise DicomWebUsageError(f"invalid byte range: {byte_range!r}")
        headers["Range"] = f"bytes={first}-{'' if last is None else last}"
    accept = multipart_accept(media_type, None)
    parts, status = await _read_parts(session, url, accept, headers, single=(media_type.lower(),))
    if byte_range is None or status == 206:
        return parts
    return _whole_to_range(parts, byte_range, url)


def _whole_to_range(
    parts: list[bytes], byte_range: tuple[int, int | None], url: str
) -> list[bytes]:
    """The asked range of a whole body a server sent instead (200, not 206)."""
    if len(parts) != 1:
        raise UnexpectedResponseError(
            f"GET {redact_url(url)}: a byte range was asked, the server sent "
            f"{len(parts)} whole parts"
        )
    first, last = byte_range
    logger.warning("GET %s: the server ignored the byte range; slicing the whole body",
                   redact_url(url))  # fmt: skip
    return [parts[0][first : None if last is None else last + 1]]


async def _read_parts(
    session: Session,
    url: str,
    accept: str,
    headers: Mapping[str, str] | None = None,
    single: tuple[str, ...] = (OCTET_STREAM,),
) -> tuple[list[bytes], int]:
    """The parts' bodies, and the answer's status."""
    async with session.stream(url, accept, headers=headers, ok=(200, 206)) as response:
        parts = MultipartStream(
            response,
            description=f"GET {redact_url(url)}",
            single_part_types=single,
            max_parts=session.max_parts,
        )
        return [await part.read() async for part in parts], response.status_code


async def retrieve_rendered(
    session: Session,
    kind: str,
    path: str,
    frame: int | None,
    accept: str,
    viewport: tuple[int, int] | None,
    window: tuple[Any, ...] | None,
    quality: int | None,
) -> bytes:
    """A `rendered` or `thumbnail` image of the resource at `path` (or of one frame)."""
    if frame is not None:
        if "/instances/" not in path or isinstance(frame, bool) or frame < 1:
            raise DicomWebUsageError("frame needs an instance and a number from 1")
        path += f"/frames/{int(frame)}"
    if window is not None and len(window) == 2:
        window = (*window, "linear")  # the standard wants the function; servers refuse 2
    query = rendered_query(viewport, window, quality)
    url = f"{session.roots.wado}{path}/{kind}" + (f"?{query}" if query else "")
    headers = {"Accept": checked_media_type(accept)}
    response = await session.request("GET", url, headers=headers)
    got = media_type(response.headers.get("content-type"))
    if got != accept.lower():
        raise UnexpectedResponseError(
            f"GET {redact_url(url)}: asked for {accept}, got {got or 'no Content-Type'!r}"
        )
    return response.content
