"""The error tree of aiodicomweb.

Server-side errors are also the builtin ``ConnectionError`` (so the legacy
adapter's documented ``except ConnectionError`` keeps working); caller-side
errors are also ``ValueError``. Local filesystem problems stay plain ``OSError``
subclasses and are not wrapped.
"""

from __future__ import annotations

__all__ = [
    "ClientClosedError",
    "DeleteUnsupportedError",
    "DicomWebError",
    "DicomWebHTTPError",
    "DicomWebServerError",
    "DicomWebTimeoutError",
    "DicomWebTransportError",
    "DicomWebUsageError",
    "InvalidUIDError",
    "MissingDependencyError",
    "MultipartError",
    "MultipartUnsupportedError",
    "StoreFailedError",
    "UIDTypeError",
    "UnexpectedResponseError",
]

_EXCERPT_LIMIT = 200


class DicomWebError(Exception):
    """Base class of every error aiodicomweb raises on its own account."""

    def __init__(self, message: str) -> None:
        # One positional argument only: OSError subclasses would otherwise read
        # (errno, strerror) out of a two-argument call.
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class DicomWebServerError(DicomWebError, ConnectionError):
    """The server, the network or the response is at fault."""


class DicomWebTransportError(DicomWebServerError):
    """The connection failed: refused, reset, closed early, TLS or protocol errors."""


class DicomWebTimeoutError(DicomWebTransportError, TimeoutError):
    """Connecting, reading, writing or waiting for a pooled connection took too long."""


class DicomWebHTTPError(DicomWebServerError):
    """The server answered with an error status (after any retries).

    Attributes:
        status: The HTTP status code.
        method: The request method.
        url: The request URL, without credentials.
        body_excerpt: The start of the response body, for diagnosis.
        retry_after: Seconds the server asked to wait (Retry-After), if any.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int,
        method: str,
        url: str,
        body_excerpt: str = "",
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.method = method
        self.url = url
        self.body_excerpt = body_excerpt
        self.retry_after = retry_after


class DeleteUnsupportedError(DicomWebHTTPError):
    """The server has no DICOMweb DELETE (405); Orthanc deletes through its REST API."""


class UnexpectedResponseError(DicomWebServerError):
    """A success status with a body that is not what was asked for.

    Wrong media type, undecodable JSON, a hostile UID in a search result.
    """


class MultipartUnsupportedError(UnexpectedResponseError):
    """The server will not send a series as multipart/related (406, 400, other media type).

    The per-instance download strategy works with such servers.
    """


class MultipartError(DicomWebServerError):
    """A multipart/related body is malformed or ends before its closing delimiter.

    Attributes:
        reason: What is wrong, without the offset.
        offset: Byte offset in the body where parsing failed.
    """

    def __init__(self, reason: str, *, offset: int) -> None:
        super().__init__(f"{reason} (at byte {offset})")
        self.reason = reason
        self.offset = offset


class StoreFailedError(DicomWebServerError):
    """Some instances were not stored (see `StoreResult.raise_for_failures`).

    Attributes:
        result: The whole `StoreResult`, stored and failed instances alike.
    """

    def __init__(self, message: str, *, result: object) -> None:
        super().__init__(message)
        self.result = result


class DicomWebUsageError(DicomWebError, ValueError):
    """The caller asked for something invalid; raised before any request."""


class InvalidUIDError(DicomWebUsageError):
    """A value is not a valid DICOM UID (digits and dots, at most 64 characters)."""


class UIDTypeError(InvalidUIDError, TypeError):
    """A UID given as something other than a string (also a `TypeError`)."""


class ClientClosedError(DicomWebUsageError, RuntimeError):
    """The client was closed; it sends nothing more."""


class MissingDependencyError(DicomWebUsageError, ImportError):
    """An option needs a package that is not installed (the message says which extra)."""


def excerpt(text: str, limit: int = _EXCERPT_LIMIT) -> str:
    """Shorten a response body for an error message, on one line."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def _underlying_reason(error: BaseException) -> str:
    """The message of the OS or TLS error beneath one that has none (httpx on trio)."""
    seen: BaseException | None = error.__cause__ or error.__context__
    for _ in range(8):  # a chain, not a cycle
        if seen is None:
            break
        if isinstance(seen, OSError) and str(seen):
            return str(seen)
        seen = seen.__cause__ or seen.__context__
    return ""


def translate_httpx_error(error: Exception, what: str) -> DicomWebError:
    """The one place where httpx exceptions become ours.

    httpx is imported lazily so this module stays importable without it.

    Args:
        error: The httpx exception.
        what: The request, e.g. "GET http://host/path", its URL already redacted.
    """
    import httpx

    detail = str(error) or _underlying_reason(error) or type(error).__name__
    if isinstance(error, httpx.UnsupportedProtocol):
        return DicomWebUsageError(f"{what}: unsupported URL scheme ({detail})")
    if isinstance(error, httpx.LocalProtocolError):  # its text may quote a header's value
        return DicomWebUsageError(f"{what}: not a valid HTTP request (a header or the target)")
    if isinstance(error, httpx.InvalidURL):
        return DicomWebUsageError(f"{what}: not a valid HTTP request ({detail})")
    if isinstance(error, httpx.TimeoutException):
        return DicomWebTimeoutError(f"{what}: timed out ({type(error).__name__}: {detail})")
    if isinstance(error, httpx.TransportError):
        return DicomWebTransportError(f"{what}: connection failed ({detail})")
    if isinstance(error, httpx.DecodingError):
        return UnexpectedResponseError(f"{what}: undecodable response body ({detail})")
    if isinstance(error, httpx.TooManyRedirects):
        return UnexpectedResponseError(f"{what}: too many redirects")
    return DicomWebServerError(f"{what}: {type(error).__name__}: {detail}")
