"""DICOM Part 10 files on the local disk: what a file is, the UIDs in its header.

pydicom is imported on demand: it is slow to import, and plain downloads never need it.
"""

from __future__ import annotations

import enum
import io
import sys
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiodicomweb._exceptions import DicomWebUsageError

if TYPE_CHECKING:
    from pydicom.dataset import Dataset

__all__ = ["FileKind", "classify", "dataset_bytes", "header_uids", "is_dataset"]

_DICOMDIR_CLASS = b"1.2.840.10008.1.3.10"


class FileKind(enum.Enum):
    """What a file found in a folder is, as far as storing it goes."""

    DICOM = "dicom"
    NOT_DICOM = "not DICOM"
    DICOMDIR = "DICOMDIR"
    UNREADABLE = "unreadable"


def classify(path: Path) -> tuple[FileKind, str]:
    """The kind of the file at `path`, and why (the reason an unreadable file gives)."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(1024)
    except OSError as error:
        return FileKind.UNREADABLE, f"unreadable ({error.strerror or error})"
    if len(head) < 132 or head[128:132] != b"DICM":
        return FileKind.NOT_DICOM, "not DICOM (no DICM preamble)"
    if path.name.upper() == "DICOMDIR" or _media_storage_class(head) == _DICOMDIR_CLASS:
        return FileKind.DICOMDIR, FileKind.DICOMDIR.value
    return FileKind.DICOM, FileKind.DICOM.value


def _media_storage_class(head: bytes) -> bytes | None:
    """MediaStorageSOPClassUID (0002,0002) from the explicit-VR file meta header."""
    at = head.find(b"\x02\x00\x02\x00UI", 132)
    if at < 0 or at + 8 > len(head):
        return None
    length = int.from_bytes(head[at + 6 : at + 8], "little")
    return head[at + 8 : at + 8 + length].rstrip(b"\x00 ")


def header_uids(source: Path | bytes) -> tuple[str | None, str | None]:
    """(SOPClassUID, SOPInstanceUID) from the header of a file or of bytes.

    Raises:
        OSError: the file cannot be read.
        ValueError: the bytes cannot be read as DICOM (pydicom's error, described).
    """
    import pydicom

    stream: Any = io.BytesIO(source) if isinstance(source, bytes) else source
    try:
        ds = pydicom.dcmread(stream, stop_before_pixels=True, force=True,
                             specific_tags=["SOPClassUID", "SOPInstanceUID"])  # fmt: skip
    except OSError:
        raise
    except Exception as error:  # pydicom raises many types for bad bytes
        raise ValueError(f"{type(error).__name__}: {error}") from None
    return _text(ds.get("SOPClassUID")), _text(ds.get("SOPInstanceUID"))


def _text(value: object) -> str | None:
    return str(value) if value else None


def is_dataset(item: object) -> bool:
    """Whether `item` is a pydicom Dataset, without importing pydicom to find out."""
    module = sys.modules.get("pydicom.dataset")
    return module is not None and isinstance(item, module.Dataset)


def dataset_bytes(ds: Dataset) -> bytes:
    """`ds` as a Part 10 file's bytes, with pydicom 3 or 2.4."""
    import pydicom

    buffer = io.BytesIO()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            if int(pydicom.__version__.split(".")[0]) >= 3:
                pydicom.dcmwrite(buffer, ds, enforce_file_format=True)
            else:
                ds.save_as(buffer, write_like_original=False)
    except (AttributeError, KeyError, TypeError, ValueError) as error:
        # pydicom's word for a dataset that is no DICOM file (no File Meta, no SOP UIDs).
        raise DicomWebUsageError(
            f"this Dataset cannot be written as a DICOM file: {type(error).__name__}: {error}"
        ) from None
    return buffer.getvalue()
