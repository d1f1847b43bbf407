"""Validators for what callers hand in, raising `DicomWebUsageError` before any request."""

from __future__ import annotations

import re
from collections.abc import Mapping

from aiodicomweb._exceptions import DicomWebUsageError

__all__ = ["checked_headers", "header_value", "positive_integer"]

# RFC 9110 field names (tokens) and values: no control character but tab, so
# nothing a value holds can end the line it is written on.
_TOKEN = re.compile(r"[-!#$%&'*+.^_`|~0-9A-Za-z]+")
_VALUE = re.compile(r"[\t\x20-\x7e\x80-\xff]*")


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


def positive_integer(name: str, value: object) -> int:
    """`value` when it is an int of at least 1 (not a bool).

    Raises:
        DicomWebUsageError: anything else, naming `name`.
    """
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise DicomWebUsageError(f"{name} must be a positive integer: {value!r}")
    return value


def checked_headers(headers: Mapping[str, str] | None) -> Mapping[str, str] | None:
    """`headers` when every name is a token and every value can be sent (see above)."""
    for name, value in (headers or {}).items():
        if not isinstance(name, str) or not _TOKEN.fullmatch(name):
            raise DicomWebUsageError(f"not a valid header name: {name!r}")
        header_value(name, value)
    return headers
