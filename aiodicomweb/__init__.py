"""aiodicomweb: a fast asyncio DICOMweb client on httpx."""

from __future__ import annotations

from aiodicomweb._auth import BearerTokenAuth
from aiodicomweb._bulk_download import (
    DownloadProgress,
    DownloadResult,
    SeriesResult,
    check_destination,
)
from aiodicomweb._bulk_store import DicomFiles, StoreProgress, find_dicom_files
from aiodicomweb._client import AsyncDicomWebClient
from aiodicomweb._exceptions import (
    ClientClosedError,
    DeleteUnsupportedError,
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
    UIDTypeError,
    UnexpectedResponseError,
)
from aiodicomweb._legacy import DicomWebAdapter, DicomWebAdapter_Fallback
from aiodicomweb._multipart_stream import MultipartStream, Part
from aiodicomweb._retry import RetryPolicy
from aiodicomweb._stow_response import FailedInstance, SkippedFile, StoredInstance, StoreResult
from aiodicomweb._sync import DicomWebClient, SyncPart
from aiodicomweb._validate import validate_uid
from aiodicomweb._wado import RenderedImage

__version__ = "0.1.0"

__all__ = [
    "AsyncDicomWebClient",
    "BearerTokenAuth",
    "ClientClosedError",
    "DeleteUnsupportedError",
    "DicomFiles",
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
    "RenderedImage",
    "RetryPolicy",
    "SeriesResult",
    "SkippedFile",
    "StoreFailedError",
    "StoreProgress",
    "StoreResult",
    "StoredInstance",
    "SyncPart",
    "UIDTypeError",
    "UnexpectedResponseError",
    "__version__",
    "check_destination",
    "find_dicom_files",
    "validate_uid",
]
