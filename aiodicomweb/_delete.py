"""DELETE, which DICOMweb does not standardise: the DICOMweb way or Orthanc's REST API."""

from __future__ import annotations

import re
from typing import Literal

from aiodicomweb._dicom_json import dataset_list
from aiodicomweb._exceptions import (
    DeleteUnsupportedError,
    DicomWebHTTPError,
    UnexpectedResponseError,
)
from aiodicomweb._session import Session
from aiodicomweb._urls import redact_url, resource_path, with_query

__all__ = ["DELETE_STRATEGIES", "DeleteStrategy", "delete"]

DeleteStrategy = Literal["dicomweb", "orthanc"]
DELETE_STRATEGIES = ("dicomweb", "orthanc")
_ORTHANC_ID = re.compile(r"[0-9a-f]{8}(?:-[0-9a-f]{8}){4}")  # a SHA-1 in five groups


async def delete(
    session: Session,
    strategy: DeleteStrategy,
    study_uid: str,
    series_uid: str | None = None,
    sop_uid: str | None = None,
    *,
    query: str = "",
) -> None:
    """Delete a study, series or instance (see `AsyncDicomWebClient.delete_study`).

    `query` (vendor extensions) goes with a DICOMweb DELETE only.
    """
    path = resource_path(study_uid, series_uid, sop_uid)
    if strategy == "orthanc":
        await _orthanc_delete(session, study_uid, series_uid, sop_uid)
        return
    try:
        url = with_query(session.roots.delete + path, query)
        await session.request("DELETE", url, ok=(200, 202, 204))
    except DicomWebHTTPError as error:
        if error.status != 405:
            raise
        raise DeleteUnsupportedError(
            f"{error}; the server does not support DICOMweb DELETE "
            "(for Orthanc, use delete_strategy='orthanc')",
            status=error.status, method=error.method, url=error.url,
            body_excerpt=error.body_excerpt,
        ) from None  # fmt: skip


async def _orthanc_delete(
    session: Session, study_uid: str, series_uid: str | None, sop_uid: str | None
) -> None:
    levels = [("Study", "studies", study_uid), ("Series", "series", series_uid),
              ("Instance", "instances", sop_uid)]  # fmt: skip
    chain = [(level, plural, uid) for level, plural, uid in levels if uid is not None]
    parent: str | None = None
    for level, plural, uid in chain:
        orthanc_id = await _orthanc_lookup(session, uid, level)
        if parent is not None:
            await _orthanc_check_parent(session, plural, orthanc_id, parent, uid)
        parent = orthanc_id
    _, plural, _ = chain[-1]
    url = f"{session.roots.orthanc}/{plural}/{parent}"
    await session.request("DELETE", url, ok=(200, 204))


async def _orthanc_lookup(session: Session, uid: str, level: str) -> str:
    url = f"{session.roots.orthanc}/tools/lookup"
    response = await session.request("POST", url, content=lambda: uid.encode())
    what, content_type = redact_url(url), response.headers.get("content-type")
    for match in dataset_list(response.content, what, content_type, allow_empty=True):
        orthanc_id = match.get("ID")
        if match.get("Type") == level and isinstance(orthanc_id, str):
            if not _ORTHANC_ID.fullmatch(orthanc_id):  # it becomes part of a DELETE URL
                raise UnexpectedResponseError(
                    f"POST {redact_url(url)}: not an Orthanc identifier: {orthanc_id[:80]!r}"
                )
            return orthanc_id
    raise DicomWebHTTPError(
        f"no {level.lower()} with UID {uid} on the server",
        status=404, method="POST", url=redact_url(url),
    )  # fmt: skip


async def _orthanc_check_parent(
    session: Session, plural: str, orthanc_id: str, parent: str, uid: str
) -> None:
    url = f"{session.roots.orthanc}/{plural}/{orthanc_id}"
    info = await session.json("GET", url)
    parent_key = {"series": "ParentStudy", "instances": "ParentSeries"}[plural]
    if not isinstance(info, dict) or info.get(parent_key) != parent:
        raise DicomWebHTTPError(
            f"{uid} does not belong to the given parent on the server",
            status=404, method="GET", url=redact_url(url),
        )  # fmt: skip
