"""aiodicomweb: a fast asyncio DICOMweb client on httpx."""

from __future__ import annotations

from aiodicomweb._auth import BearerTokenAuth
from aiodicomweb._client import AsyncDicomWebClient
from aiodicomweb._download import DownloadProgress, DownloadResult, SeriesResult
from aiodicomweb._exceptions import (
    ClientClosedError,
    DicomWebError,
    DicomWebHTTPError,
    DicomWebServerError,
    DicomWebTimeoutError,
    DicomWebTransportError,
    DicomWebUsageError,
    InvalidUIDError,
    MissingDependencyError,
    MultipartError,
    MultipartUnsupportedError,
    StoreFailedError,
    UnexpectedResponseError,
)
from aiodicomweb._legacy import DicomWebAdapter, DicomWebAdapter_Fallback
from aiodicomweb._parts import MultipartStream, Part
from aiodicomweb._retry import RetryPolicy
from aiodicomweb._store import StoreProgress
from aiodicomweb._stow import FailedInstance, StoredInstance, StoreResult
from aiodicomweb._sync import DicomWebClient, SyncPart

__version__ = "0.1.0"

__all__ = [
    "AsyncDicomWebClient",
    "BearerTokenAuth",
    "ClientClosedError",
    "DicomWebAdapter",
    "DicomWebAdapter_Fallback",
    "DicomWebClient",
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
    "MissingDependencyError",
    "MultipartError",
    "MultipartStream",
    "MultipartUnsupportedError",
    "Part",
    "RetryPolicy",
    "SeriesResult",
    "StoreFailedError",
    "StoreProgress",
    "StoreResult",
    "StoredInstance",
    "SyncPart",
    "UnexpectedResponseError",
    "__version__",
]
