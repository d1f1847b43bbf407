"""dicomweb-client's `DICOMwebClient` API on aiodicomweb's one async core.

A one-line switch for code written against dicomweb-client 0.61::

    from aiodicomweb.compat import DICOMwebClient  # was: from dicomweb_client.api import ...

`DICOMwebClient` keeps the peer's constructor, method names, parameters,
defaults and return types (pydicom Datasets, DICOM JSON, bytes, iterators);
`AsyncDICOMwebClient` is its async twin. Every method delegates to
`AsyncDicomWebClient` (the blocking one through `DicomWebClient`); errors are
aiodicomweb's. The differences from the peer are listed in docs/compat.md.
"""

from __future__ import annotations

from aiodicomweb.compat._async import AsyncDICOMwebClient
from aiodicomweb.compat._sync import DICOMwebClient

__all__ = ["AsyncDICOMwebClient", "DICOMwebClient"]
