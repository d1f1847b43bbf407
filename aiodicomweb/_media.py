"""Media types: the one Content-Type parser, Accept headers, transfer syntaxes (pure)."""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

from aiodicomweb._exceptions import DicomWebUsageError, MultipartError

__all__ = [
    "DICOM",
    "DICOM_JSON",
    "DICOM_XML",
    "OCTET_STREAM",
    "ContentType",
    "MediaTypes",
    "accepted_types",
    "checked_media_type",
    "media_type",
    "multipart_accept",
    "parse_content_type",
    "read_content_type",
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
    r"\*/\*|[A-Za-z0-9][\w!#$&^.+-]{0,126}/(?:\*|[A-Za-z0-9][\w!#$&^.+-]{0,126})", re.ASCII
)
_TRANSFER_SYNTAX = re.compile(r"\*|[0-9]+(?:\.[0-9]+)*")
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_QUOTED = re.compile(r'"((?:[^"\\\r\n]|\\[^\r\n])*)"')
# Unquoted parameter values are read leniently: servers send boundaries such as
# ----=_Part_1 without quotes although "=" is not a token character.
_LOOSE_VALUE = re.compile(r'[^\x00-\x20";\x7f]+')
_QUOTED_PAIR = re.compile(r"\\(.)", re.DOTALL)


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


@dataclass(frozen=True)
class ContentType:
    """A parsed ``Content-Type`` header value.

    Attributes:
        media_type: Type and subtype, lower-cased (``"multipart/related"``).
        params: Parameters; names lower-cased, values unquoted with their case kept.
    """

    media_type: str
    params: Mapping[str, str] = field(default_factory=dict, hash=False)

    @property
    def boundary(self) -> str | None:
        """The ``boundary`` parameter, if present."""
        return self.params.get("boundary")

    def param(self, name: str) -> str | None:
        """Return a parameter by case-insensitive name, or ``None``."""
        return self.params.get(name.lower())


@functools.lru_cache(maxsize=256)  # the same few values come with every part and answer
def parse_content_type(value: str) -> ContentType:
    """Parse a ``Content-Type`` header value (RFC 9110 media type with parameters).

    Whitespace around separators is tolerated, as are empty parameters (``;;``).

    Args:
        value: The header value, e.g. ``multipart/related; type="application/dicom"``.

    Returns:
        The media type and its parameters.

    Raises:
        MultipartError: The value is malformed; ``offset`` is the position in ``value``.
    """
    pos = _skip_ows(value, 0)
    main, pos = _expect_token(value, pos, "a media type")
    pos = _skip_ows(value, pos)
    if not value.startswith("/", pos):
        raise MultipartError(f"expected '/' in Content-Type {value!r}", offset=pos)
    pos = _skip_ows(value, pos + 1)
    sub, pos = _expect_token(value, pos, "a media subtype")
    params: dict[str, str] = {}
    while True:
        pos = _skip_ows(value, pos)
        if pos == len(value):
            break
        if value[pos] != ";":
            raise MultipartError(f"expected ';' in Content-Type {value!r}", offset=pos)
        pos = _skip_ows(value, pos + 1)
        if pos < len(value) and value[pos] != ";":
            pos = _parse_parameter(value, pos, params)
    return ContentType(f"{main}/{sub}".lower(), MappingProxyType(params))


def _skip_ows(value: str, pos: int) -> int:
    while pos < len(value) and value[pos] in " \t":
        pos += 1
    return pos


def _expect_token(value: str, pos: int, what: str) -> tuple[str, int]:
    match = _TOKEN.match(value, pos)
    if match is None:
        raise MultipartError(f"expected {what} in Content-Type {value!r}", offset=pos)
    return match.group(), match.end()


def _parse_parameter(value: str, pos: int, params: dict[str, str]) -> int:
    """Parse ``name=value`` at ``pos`` into ``params``; return the position after it."""
    name_at = pos
    name, pos = _expect_token(value, pos, "a parameter name")
    pos = _skip_ows(value, pos)
    if not value.startswith("=", pos):
        raise MultipartError(f"expected '=' after parameter {name!r}", offset=pos)
    pos = _skip_ows(value, pos + 1)
    if value.startswith('"', pos):
        match = _QUOTED.match(value, pos)
        if match is None:
            raise MultipartError(f"unterminated quoted string in {value!r}", offset=pos)
        text = _QUOTED_PAIR.sub(r"\1", match.group(1))
    else:
        match = _LOOSE_VALUE.match(value, pos)
        if match is None:
            raise MultipartError(f"missing value for parameter {name!r}", offset=pos)
        text = match.group()
    key = name.lower()
    if key in params:
        raise MultipartError(f"duplicate parameter {name!r} in Content-Type", offset=name_at)
    params[key] = text
    return match.end()


def read_content_type(value: str | None) -> ContentType:
    """A Content-Type read as far as it can be, for answers where it only informs.

    A malformed value keeps its media type and the parameters that read as
    `name=value`; an absent one is the empty media type.
    """
    if not value:
        return ContentType("")
    try:
        return parse_content_type(value)
    except MultipartError:
        main, *pieces = value.split(";")
        params: dict[str, str] = {}
        for piece in pieces:
            name, equals, text = piece.partition("=")
            if equals and name.strip():
                params.setdefault(name.strip().lower(), text.strip().strip('"').strip())
        return ContentType(main.strip().lower(), MappingProxyType(params))


MediaTypes = str | Sequence[str | tuple[str, str | None]]


def accepted_types(
    media_types: MediaTypes, transfer_syntax: str | None
) -> list[tuple[str, str | None]]:
    """`(media type, transfer syntax)` pairs: one type, or several, each plain or with
    its own transfer syntax (`transfer_syntax` applies to the plain ones)."""
    if isinstance(media_types, str):
        return [(media_types, transfer_syntax)]
    pairs = []
    for item in media_types:
        if isinstance(item, str):
            pairs.append((item, transfer_syntax))
        elif isinstance(item, tuple) and 1 <= len(item) <= 2:
            pairs.append((item[0], item[1] if len(item) == 2 else None))
        else:
            raise DicomWebUsageError(
                f"not a media type or (media type, transfer syntax): {item!r}"
            )
    if not pairs:
        raise DicomWebUsageError("no media type given")
    return pairs


def media_type(content_type: str | None) -> str:
    """The bare, lower-cased media type of a Content-Type value ("" when absent)."""
    return read_content_type(content_type).media_type
