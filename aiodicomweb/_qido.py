"""QIDO-RS: searches, paging, and the lookups built on them."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterable, Mapping

from aiodicomweb._dicom_json import JSON, STUDY_INSTANCE_UID, first_value
from aiodicomweb._session import Session
from aiodicomweb._urls import Level, build_query
from aiodicomweb._validate import positive_integer, server_uid, validate_uid

__all__ = ["find_study_uid", "search", "search_pages"]

logger = logging.getLogger("aiodicomweb")

Match = Mapping[str | int, object]
Fields = Iterable[str | int] | str


async def search(
    session: Session,
    level: Level,
    study_uid: str | None,
    series_uid: str | None,
    match: Match | None,
    *,
    include_fields: Fields | None,
    fuzzy: bool | None,
    limit: int | None,
    offset: int | None,
) -> list[JSON]:
    """See `AsyncDicomWebClient.search`."""
    query = build_query(
        match, include_fields=include_fields, fuzzy=fuzzy, limit=limit, offset=offset
    )
    return await session.search(level, study_uid, series_uid, query)


async def search_pages(
    session: Session,
    level: Level,
    study_uid: str | None,
    series_uid: str | None,
    match: Match | None,
    *,
    page_size: int,
    include_fields: Fields | None,
    fuzzy: bool | None,
) -> AsyncIterator[list[JSON]]:
    """See `AsyncDicomWebClient.search_pages`."""
    positive_integer("page_size", page_size)
    offset, previous = 0, None
    while True:
        page = await search(
            session, level, study_uid, series_uid, match,
            include_fields=include_fields, fuzzy=fuzzy, limit=page_size, offset=offset,
        )  # fmt: skip
        if not page or page == previous:
            if page:
                logger.warning("server ignores QIDO offset; stopped after %d results", offset)
            return
        yield page
        if len(page) < page_size:
            return
        offset, previous = offset + len(page), page


async def find_study_uid(session: Session, series_uid: str) -> str | None:
    """See `AsyncDicomWebClient.find_study_uid`."""
    match: Match = {"SeriesInstanceUID": validate_uid(series_uid, "SeriesInstanceUID")}
    query = build_query(match, include_fields=["StudyInstanceUID"])
    found = await session.search("series", None, None, query)
    if not found:
        return None
    return server_uid(first_value(found[0], STUDY_INSTANCE_UID), "StudyInstanceUID")
