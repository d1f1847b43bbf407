"""Validators: what callers hand in (refused before any request) and UIDs servers send."""

from __future__ import annotations

import re
from collections.abc import Mapping

from aiodicomweb._exceptions import (
    DicomWebUsageError,
    InvalidUIDError,
    UIDTypeError,
    UnexpectedResponseError,
)

__all__ = [
    "checked_headers",
    "header_value",
    "is_valid_uid",
    "positive_integer",
    "server_uid",
    "validate_uid",
]

# RFC 9110 field names (tokens) and values: no control character but tab, so
# nothing a value holds can end the line it is written on.
_TOKEN = re.compile(r"[-!#$%&'*+.^_`|~0-9A-Za-z]+")
_VALUE = re.compile(r"[\t\x20-\x7e\x80-\xff]*")
# Digits and dots, no empty component. Leading zeros inside a component are
# invalid per PS3.5 9.1 but occur in the wild; they are harmless as path names.
_UID_RE = re.compile(r"[0-9]+(?:\.[0-9]+)*")
_UID_MAX = 64


def header_value(name: str, value: str) -> str:
    """`value` when it can be sent as the header `name`.

    Raises:
        DicomWebUsageError: a line break or another control character, or leading
            or trailing white space (a token read from a file with its newline).
            The message names the header, never the value: it may be a secret.
    """
    if not isinstance(value, str) or not _VALUE.fullmatch(value) or value != value.strip():
        raise DicomWebUsageError(
            f"header {name!r}: the value has a line break, a control character or "
            "surrounding white space (strip what was read from a file or variable)"
        )
    return value


def positive_integer(name: str, value: object, *, minimum: int = 1) -> int:
    """`value` when it is an int (not a bool) of at least `minimum`.

    Raises:
        DicomWebUsageError: anything else, naming `name`.
    """
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        wanted = "a positive integer" if minimum == 1 else f"an integer of at least {minimum}"
        raise DicomWebUsageError(f"{name} must be {wanted}: {value!r}")
    return value


def checked_headers(headers: Mapping[str, str] | None) -> Mapping[str, str] | None:
    """`headers` when every name is a token and every value can be sent (see above)."""
    for name, value in (headers or {}).items():
        if not isinstance(name, str) or not _TOKEN.fullmatch(name):
            raise DicomWebUsageError(f"not a valid header name: {name!r}")
        header_value(name, value)
    return headers


def is_valid_uid(value: object) -> bool:
    """Whether `value` is a DICOM UID: digits and dots, 1 to 64 characters."""
    return isinstance(value, str) and len(value) <= _UID_MAX and bool(_UID_RE.fullmatch(value))


def validate_uid(value: object, what: str = "UID") -> str:
    """Return `value` if it is a valid UID supplied by the caller.

    Raises:
        InvalidUIDError: `value` is not a valid UID (also a ValueError).
        UIDTypeError: `value` is not a string (an InvalidUIDError, also a TypeError).
    """
    if not isinstance(value, str):
        raise UIDTypeError(f"{what} must be a string, not {type(value).__name__}: {value!r}")
    if len(value) > _UID_MAX:
        raise InvalidUIDError(
            f"invalid {what}: UID {value!r} is longer than {_UID_MAX} characters"
        )
    if not _UID_RE.fullmatch(value):
        raise InvalidUIDError(
            f"invalid {what}: UID {value!r} must match regex [0-9]+(\\.[0-9]+)* (digits and dots)"
        )
    return value


def server_uid(value: object, what: str) -> str:
    """Return a UID that came from a server, refusing anything unsafe as a path.

    Raises:
        UnexpectedResponseError: the server sent something that is not a UID.
    """
    if not is_valid_uid(value):
        shown = repr(value)[:80]
        raise UnexpectedResponseError(f"server returned an invalid {what}: {shown}")
    assert isinstance(value, str)
    return value
