"""QIDO-RS: searches, paging, and the lookups built on them."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterable, Mapping

from aiodicomweb._dicom_json import JSON, STUDY_INSTANCE_UID, first_value
from aiodicomweb._session import Session, says_capped
from aiodicomweb._urls import Level, Params, build_query, extra_query
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
    additional_params: Params | None = None,
) -> list[JSON]:
    """See `AsyncDicomWebClient.search`.

    A server that caps its answer and says so (`Warning: 299 ... additional
    results`) is asked for the rest, page by page, up to `limit`.
    """
    query = build_query(
        match, include_fields=include_fields, fuzzy=fuzzy, limit=limit, offset=offset
    )
    query = "&".join(filter(None, [query, extra_query(additional_params)]))
    results, warning = await session.search_page(level, study_uid, series_uid, query)
    if not results or not says_capped(warning):
        return results
    if limit is not None and len(results) >= limit:
        return results
    logger.info("the server capped its answer at %d results; asking for the rest", len(results))
    async for page in search_pages(
        session, level, study_uid, series_uid, match, page_size=len(results),
        include_fields=include_fields, fuzzy=fuzzy, start=(offset or 0) + len(results),
        previous=results, additional_params=additional_params,
    ):  # fmt: skip
        results += page
        if limit is not None and len(results) >= limit:
            return results[:limit]
    return results


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
    start: int = 0,
    previous: list[JSON] | None = None,
    additional_params: Params | None = None,
) -> AsyncIterator[list[JSON]]:
    """See `AsyncDicomWebClient.search_pages`.

    A short page is not the end (servers cap pages below `limit`): the walk ends
    on an empty page, or when the server ignores `offset` (the same page again).
    """
    positive_integer("page_size", page_size)
    extra = extra_query(additional_params)
    offset = positive_integer("offset", start, minimum=0)
    while True:
        query = build_query(
            match, include_fields=include_fields, fuzzy=fuzzy, limit=page_size, offset=offset
        )
        query = "&".join(filter(None, [query, extra]))
        page, _ = await session.search_page(level, study_uid, series_uid, query)
        if not page:
            return
        if page == previous:
            logger.warning("the server ignores QIDO offset; stopped after %d results", offset)
            return
        yield page
        offset, previous = offset + len(page), page


async def find_study_uid(session: Session, series_uid: str) -> str | None:
    """See `AsyncDicomWebClient.find_study_uid`."""
    match: Match = {"SeriesInstanceUID": validate_uid(series_uid, "SeriesInstanceUID")}
    query = build_query(match, include_fields=["StudyInstanceUID"])
    found = await session.search("series", None, None, query)
    if not found:
        return None
    return server_uid(first_value(found[0], STUDY_INSTANCE_UID), "StudyInstanceUID")
