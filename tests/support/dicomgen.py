"""Deterministic synthetic DICOM data for tests, the demo and the benchmarks.

UIDs are derived from (study, series, instance) numbers under one root, and pixel
noise is seeded by the same numbers, so every run produces identical bytes.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    RLELossless,
)

UID_ROOT = "1.2.826.0.1.3680043.8.498.4711"
CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
MULTIFRAME_WORD_SC = "1.2.840.10008.5.1.4.1.1.7.3"
PYDICOM_MAJOR = int(pydicom.__version__.split(".")[0])


def study_uid(study: int, root: str = UID_ROOT) -> str:
    return f"{root}.{study}"


def series_uid(study: int, series: int, root: str = UID_ROOT) -> str:
    return f"{root}.{study}.{series}"


def sop_uid(study: int, series: int, instance: int, root: str = UID_ROOT) -> str:
    return f"{root}.{study}.{series}.{instance}"


@dataclass(frozen=True)
class SeriesSpec:
    """What one generated series looks like."""

    study: int
    series: int
    instances: int
    rows: int = 256
    columns: int = 256
    frames: int = 1
    modality: str = "CT"
    transfer_syntax: str = ExplicitVRLittleEndian
    patient_name: str = "TEST^SCRATCH"
    patient_id: str = "TEST-SCRATCH"
    study_description: str = "Synthetic study"
    study_date: str = "20240115"
    root: str = UID_ROOT

    @property
    def study_uid(self) -> str:
        return study_uid(self.study, self.root)

    @property
    def series_uid(self) -> str:
        return series_uid(self.study, self.series, self.root)

    @property
    def sop_class_uid(self) -> str:
        if self.frames > 1:
            return MULTIFRAME_WORD_SC
        return MR_IMAGE_STORAGE if self.modality == "MR" else CT_IMAGE_STORAGE


@dataclass(frozen=True)
class Instance:
    """One generated instance: its UIDs and its Part 10 bytes."""

    study_uid: str
    series_uid: str
    sop_instance_uid: str
    sop_class_uid: str
    transfer_syntax: str
    data: bytes = field(repr=False)


def make_dataset(spec: SeriesSpec, number: int) -> Dataset:
    """Build instance `number` (1-based) of `spec` with seeded 16-bit noise."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = spec.sop_class_uid
    meta.MediaStorageSOPInstanceUID = sop_uid(spec.study, spec.series, number, spec.root)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = spec.sop_class_uid
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = spec.study_uid
    ds.SeriesInstanceUID = spec.series_uid
    ds.PatientName = spec.patient_name
    ds.PatientID = spec.patient_id
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "O"
    ds.StudyDate = spec.study_date
    ds.StudyTime = "101500"
    ds.StudyID = str(spec.study)
    ds.AccessionNumber = f"ACC{spec.study:05d}"
    ds.StudyDescription = spec.study_description
    ds.SeriesDescription = f"Series {spec.series}"
    ds.Modality = spec.modality
    ds.SeriesNumber = spec.series
    ds.InstanceNumber = number
    ds.Manufacturer = "aiodicomweb test generator"
    _add_pixels(ds, spec, number)
    return ds


def _add_pixels(ds: Dataset, spec: SeriesSpec, number: int) -> None:
    rng = np.random.default_rng([spec.study, spec.series, number])
    shape = (
        (spec.frames, spec.rows, spec.columns) if spec.frames > 1 else (spec.rows, spec.columns)
    )
    pixels = rng.integers(0, 4096, size=shape, dtype=np.uint16)
    ds.Rows = spec.rows
    ds.Columns = spec.columns
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    if spec.frames > 1:
        ds.NumberOfFrames = spec.frames
    ds.PixelData = pixels.tobytes()
    ds["PixelData"].VR = "OW"
    if spec.transfer_syntax == RLELossless:
        if PYDICOM_MAJOR >= 3:
            ds.compress(RLELossless, pixels, generate_instance_uid=False)
        else:
            ds.compress(RLELossless, pixels)


def encode(ds: Dataset, transfer_syntax: str) -> bytes:
    """Write `ds` as a DICOM Part 10 file in `transfer_syntax`."""
    if transfer_syntax != RLELossless:
        ds.file_meta.TransferSyntaxUID = transfer_syntax
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        if PYDICOM_MAJOR >= 3:
            pydicom.dcmwrite(buffer, ds, enforce_file_format=True)
        else:
            ds.is_little_endian = True
            ds.is_implicit_VR = False
            ds.save_as(buffer, write_like_original=False)
    return buffer.getvalue()


def generate_series(spec: SeriesSpec) -> Iterator[Instance]:
    """Yield the instances of one series, in instance-number order."""
    for number in range(1, spec.instances + 1):
        ds = make_dataset(spec, number)
        yield Instance(
            study_uid=spec.study_uid,
            series_uid=spec.series_uid,
            sop_instance_uid=str(ds.SOPInstanceUID),
            sop_class_uid=spec.sop_class_uid,
            transfer_syntax=spec.transfer_syntax,
            data=encode(ds, spec.transfer_syntax),
        )


# The corpus the test suite uploads: two studies, five series, one multi-frame
# instance, and two compressed transfer syntaxes pydicom writes without codecs.
TEST_CORPUS: tuple[SeriesSpec, ...] = (
    SeriesSpec(study=1, series=1, instances=12,
               patient_name="TEST^ALPHA", patient_id="TEST-ALPHA"),
    SeriesSpec(study=1, series=2, instances=5, rows=128, columns=128, modality="MR",
               patient_name="TEST^ALPHA", patient_id="TEST-ALPHA"),
    SeriesSpec(
        study=2, series=1, instances=1, rows=128, columns=128, frames=4,
        modality="OT", patient_name="TEST^BETA", patient_id="TEST-BETA",
        study_description="Multi-frame and compressed", study_date="20240220",
    ),
    SeriesSpec(
        study=2, series=2, instances=3, rows=128, columns=128, transfer_syntax=RLELossless,
        patient_name="TEST^BETA", patient_id="TEST-BETA",
        study_description="Multi-frame and compressed", study_date="20240220",
    ),
    SeriesSpec(
        study=2, series=3, instances=2, rows=64, columns=64,
        transfer_syntax=DeflatedExplicitVRLittleEndian,
        patient_name="TEST^BETA", patient_id="TEST-BETA",
        study_description="Multi-frame and compressed", study_date="20240220",
    ),
)  # fmt: skip
