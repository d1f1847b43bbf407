"""Media types, Accept headers and transfer syntaxes (pure)."""

from __future__ import annotations

import re

from aiodicomweb._exceptions import DicomWebUsageError

__all__ = [
    "DICOM",
    "DICOM_JSON",
    "DICOM_XML",
    "OCTET_STREAM",
    "checked_media_type",
    "media_type",
    "multipart_accept",
]

DICOM = "application/dicom"
DICOM_JSON = "application/dicom+json"
DICOM_XML = "application/dicom+xml"
OCTET_STREAM = "application/octet-stream"
MULTIPART_RELATED = "multipart/related"
JSON_ACCEPT = f"{DICOM_JSON}, application/json;q=0.9"
STOW_ACCEPT = f"{DICOM_JSON}, application/json;q=0.9, {DICOM_XML};q=0.5"


# RFC 6838 restricted names; a transfer syntax is "*" or a UID.
_MEDIA_TYPE = re.compile(
    r"[A-Za-z0-9][\w!#$&^.+-]{0,126}/[A-Za-z0-9][\w!#$&^.+-]{0,126}", re.ASCII
)
_TRANSFER_SYNTAX = re.compile(r"\*|[0-9]+(?:\.[0-9]+)*")


def checked_media_type(value: str) -> str:
    """`value` if it is a plain `type/subtype`; it goes into an Accept header.

    Raises:
        DicomWebUsageError: anything else (parameters, spaces, line breaks).
    """
    if not isinstance(value, str) or not _MEDIA_TYPE.fullmatch(value):
        raise DicomWebUsageError(f"not a media type: {value!r}")
    return value


def multipart_accept(part_type: str = DICOM, transfer_syntax: str | None = "*") -> str:
    """`multipart/related; type="..."` with `transfer-syntax` outside the quoted type.

    Some servers (dcm4chee, Orthanc before 1.16) mis-parse a transfer-syntax
    written inside the quotes, so it is always its own parameter.

    Raises:
        DicomWebUsageError: a part type or transfer syntax that is not one.
    """
    accept = f'{MULTIPART_RELATED}; type="{checked_media_type(part_type)}"'
    if transfer_syntax:
        if not isinstance(transfer_syntax, str) or not (
            _TRANSFER_SYNTAX.fullmatch(transfer_syntax) and len(transfer_syntax) <= 64
        ):
            raise DicomWebUsageError(f"not a transfer syntax UID or '*': {transfer_syntax!r}")
        accept += f"; transfer-syntax={transfer_syntax}"
    return accept


def media_type(content_type: str | None) -> str:
    """The bare, lower-cased media type of a Content-Type value ("" when absent)."""
    if not content_type:
        return ""
    return content_type.split(";", 1)[0].strip().lower()
