"""aiodicomweb: a fast asyncio DICOMweb client on httpx."""

from __future__ import annotations

from aiodicomweb._exceptions import (
    DicomWebError,
    DicomWebHTTPError,
    DicomWebServerError,
    DicomWebTimeoutError,
    DicomWebTransportError,
    DicomWebUsageError,
    InvalidUIDError,
    MultipartError,
    UnexpectedResponseError,
)

__version__ = "0.1.0"

__all__ = [
    "DicomWebError",
    "DicomWebHTTPError",
    "DicomWebServerError",
    "DicomWebTimeoutError",
    "DicomWebTransportError",
    "DicomWebUsageError",
    "InvalidUIDError",
    "MultipartError",
    "UnexpectedResponseError",
    "__version__",
]
