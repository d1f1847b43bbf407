"""DICOM JSON (PS3.18 Annex F): decoding answers and reading attributes (pure)."""

from __future__ import annotations

import gc
import json
import logging
import re
from typing import Any

from aiodicomweb._exceptions import UnexpectedResponseError
from aiodicomweb._media import media_type

__all__ = [
    "JSON",
    "NUMBER_OF_SERIES_RELATED_INSTANCES",
    "SERIES_INSTANCE_UID",
    "SOP_INSTANCE_UID",
    "STUDY_INSTANCE_UID",
    "dataset_list",
    "first_value",
    "json_document",
    "loads",
]

JSON = dict[str, Any]
STUDY_INSTANCE_UID = "0020000D"
SERIES_INSTANCE_UID = "0020000E"
SOP_INSTANCE_UID = "00080018"
NUMBER_OF_SERIES_RELATED_INSTANCES = "00201209"
_GC_PAUSE_BYTES = 16 * 1024  # a 20-instance listing (35 KB) is 3,000 objects
_TAG = re.compile(r"[0-9A-Fa-f]{8}")
logger = logging.getLogger("aiodicomweb")


def loads(data: bytes) -> Any:
    """`json.loads` with the cyclic collector paused for large answers.

    Nothing being built can be garbage yet, and the collections its creation
    triggers cost a third of the decoding. A collector the application turned
    off stays off.
    """
    if len(data) < _GC_PAUSE_BYTES or not gc.isenabled():
        return json.loads(data)
    gc.disable()
    try:
        return json.loads(data)
    finally:
        gc.enable()


def json_document(body: bytes, what: str, content_type: str | None) -> Any:
    """The JSON document of an answer's body.

    Raises:
        UnexpectedResponseError: the body is not JSON (`what` names the request).
    """
    try:
        return loads(body)
    except ValueError:
        raise UnexpectedResponseError(
            f"{what}: answer is not JSON ({media_type(content_type) or 'no Content-Type'})"
        ) from None


def dataset_list(
    body: bytes, what: str, content_type: str | None, *, allow_empty: bool
) -> list[JSON]:
    """The DICOM JSON datasets of an answer: a JSON array of objects.

    Raises:
        UnexpectedResponseError: an empty body when one is not allowed, or
            anything but an array of objects.
    """
    if not body.strip():
        if allow_empty:
            return []
        raise UnexpectedResponseError(f"{what}: empty answer")
    data = json_document(body, what, content_type)
    if isinstance(data, dict) and data and all(_TAG.fullmatch(str(key)) for key in data):
        logger.warning("%s: a DICOM JSON object where an array belongs; read as one", what)
        data = [data]
    if not isinstance(data, list) or not all(isinstance(item, dict) for item in data):
        raise UnexpectedResponseError(f"{what}: expected a JSON array of objects")
    return data


def first_value(dataset: JSON, tag: str) -> object:
    """The first value of attribute `tag` (eight hex digits), or None."""
    element = dataset.get(tag)
    values = element.get("Value") if isinstance(element, dict) else None
    return values[0] if isinstance(values, list) and values else None
