"""Media types, Accept headers and transfer syntaxes (pure)."""

from __future__ import annotations

__all__ = [
    "ANY_TRANSFER_SYNTAX",
    "DICOM",
    "DICOM_JSON",
    "DICOM_XML",
    "OCTET_STREAM",
    "media_type",
    "multipart_accept",
]

DICOM = "application/dicom"
DICOM_JSON = "application/dicom+json"
DICOM_XML = "application/dicom+xml"
OCTET_STREAM = "application/octet-stream"
MULTIPART_RELATED = "multipart/related"
# "*" asks for the bytes as stored: no transcoding on the server.
ANY_TRANSFER_SYNTAX = "*"
QIDO_ACCEPT = f"{DICOM_JSON}, application/json;q=0.9"
STOW_ACCEPT = f"{DICOM_JSON}, application/json;q=0.9, {DICOM_XML};q=0.5"


def multipart_accept(part_type: str = DICOM, transfer_syntax: str | None = "*") -> str:
    """`multipart/related; type="..."` with `transfer-syntax` outside the quoted type.

    Some servers (dcm4chee, Orthanc before 1.16) mis-parse a transfer-syntax
    written inside the quotes, so it is always its own parameter.
    """
    accept = f'{MULTIPART_RELATED}; type="{part_type}"'
    if transfer_syntax:
        accept += f"; transfer-syntax={transfer_syntax}"
    return accept


def media_type(content_type: str | None) -> str:
    """The bare, lower-cased media type of a Content-Type value ("" when absent)."""
    if not content_type:
        return ""
    return content_type.split(";", 1)[0].strip().lower()
