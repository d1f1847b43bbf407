"""aiodicomweb: a fast asyncio DICOMweb client on httpx."""

from __future__ import annotations

from aiodicomweb._auth import BearerTokenAuth
from aiodicomweb._client import AsyncDicomWebClient
from aiodicomweb._download import DownloadProgress, DownloadResult, SeriesResult
from aiodicomweb._exceptions import (
    DicomWebError,
    DicomWebHTTPError,
    DicomWebServerError,
    DicomWebTimeoutError,
    DicomWebTransportError,
    DicomWebUsageError,
    InvalidUIDError,
    MultipartError,
    MultipartUnsupportedError,
    UnexpectedResponseError,
)
from aiodicomweb._parts import MultipartStream, Part
from aiodicomweb._retry import RetryPolicy
from aiodicomweb._stow import FailedInstance, StoredInstance, StoreResult

__version__ = "0.1.0"

__all__ = [
    "AsyncDicomWebClient",
    "BearerTokenAuth",
    "DicomWebError",
    "DicomWebHTTPError",
    "DicomWebServerError",
    "DicomWebTimeoutError",
    "DicomWebTransportError",
    "DicomWebUsageError",
    "DownloadProgress",
    "DownloadResult",
    "FailedInstance",
    "InvalidUIDError",
    "MultipartError",
    "MultipartStream",
    "MultipartUnsupportedError",
    "Part",
    "RetryPolicy",
    "SeriesResult",
    "StoreResult",
    "StoredInstance",
    "UnexpectedResponseError",
    "__version__",
]
