"""STOW-RS: one store request, its body streamed instance by instance."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import replace
from typing import Protocol

from aiodicomweb._multipart import MultipartEncoder
from aiodicomweb._session import Session
from aiodicomweb._stow_response import StoreResult, parse_store_response
from aiodicomweb._urls import with_query
from aiodicomweb._validate import validate_uid

__all__ = ["InstanceBody", "store_instances", "stow_url"]

# STOW answers carry the outcome in the body: Orthanc answers 409 (some failed)
# and 400 (some parts were not DICOM) with a full list of what it stored.
_STOW_ANSWERS = (200, 202, 400, 409)


class InstanceBody(Protocol):
    """One instance to send: its size, and its bytes afresh for each attempt."""

    @property
    def size(self) -> int: ...

    def chunks(self, chunk_size: int) -> AsyncIterator[bytes]: ...


def stow_url(session: Session, study_uid: str | None, query: str = "") -> str:
    """`/studies`, or `/studies/{uid}` (the server then refuses other studies)."""
    url = session.roots.stow + "/studies"
    if study_uid is not None:
        url += "/" + validate_uid(study_uid, "StudyInstanceUID")
    return with_query(url, query)


async def store_instances(
    session: Session, url: str, instances: Sequence[InstanceBody]
) -> StoreResult:
    """POST `instances` in one multipart/related request; the server's account of them.

    The server's `Warning` header, if any, joins the result's warnings.
    """
    encoder = MultipartEncoder()
    heads = [encoder.part_head(first=index == 0) for index in range(len(instances))]
    tail = encoder.close_delimiter()
    length = sum(map(len, heads)) + sum(i.size for i in instances) + len(tail)

    async def body() -> AsyncIterator[bytes]:
        for head, instance in zip(heads, instances, strict=True):
            yield head
            async for chunk in instance.chunks(session.chunk_size):
                yield chunk
        yield tail

    headers = {"Content-Type": encoder.content_type, "Content-Length": str(length)}
    response = await session.accepting_json(
        "POST", url, headers=headers, content=body, ok=_STOW_ANSWERS
    )
    result = parse_store_response(
        response.status_code, response.headers.get("content-type"), response.content
    )
    warning = response.headers.get("warning")
    return replace(result, warnings=(*result.warnings, warning)) if warning else result
