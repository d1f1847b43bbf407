"""`DICOMwebClient`: dicomweb-client's blocking API, each method one call into
aiodicomweb's blocking `DicomWebClient` (which runs the async core)."""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterator, Sequence
from contextlib import AbstractContextManager
from typing import Any, TypeVar, cast

from pydicom.dataset import Dataset

from aiodicomweb import DicomWebClient, SyncPart
from aiodicomweb._urls import Level, redact_url
from aiodicomweb.compat._common import (
    PAGE_SIZE,
    JSONDataset,
    MediaTypes,
    PeerClient,
    core_range,
    dicom_syntax,
    part_types,
    read_dataset,
    rendered_types,
    search_arguments,
    search_scope,
    store_response,
)

__all__ = ["DICOMwebClient"]

T = TypeVar("T")


def _started(
    opened: AbstractContextManager[Iterator[SyncPart]], convert: Callable[[bytes], T]
) -> Generator[T, None, None]:
    """The parts of a stream, converted; the request is sent before this returns, as
    the peer's `iter_*` send it."""

    def parts() -> Generator[T | None, None, None]:
        with opened as stream:
            yield None  # the request has been answered
            for part in stream:
                yield convert(part.read())

    generator = parts()
    next(generator)
    return cast(Generator[T, None, None], generator)


def _raw(data: bytes) -> bytes:
    return data


class DICOMwebClient(PeerClient[DicomWebClient]):
    """dicomweb-client 0.61's `DICOMwebClient`, on aiodicomweb.

    Use it as the peer's (a context manager and `close()` are added). Errors are
    aiodicomweb's: `DicomWebHTTPError` for an HTTP error status, after retries too.
    See `PeerClient` for the constructor and docs/compat.md for the differences.
    """

    def _open(self, options: dict[str, Any]) -> DicomWebClient:
        return DicomWebClient(self.base_url, **options)

    def __repr__(self) -> str:
        return f"<compat.DICOMwebClient {redact_url(self.base_url)!r}>"

    def __enter__(self) -> DICOMwebClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connections (also done at garbage collection)."""
        for core in self._cores():
            core.close()

    # -- QIDO-RS -------------------------------------------------------------------------

    def _search(
        self, level: Level, study: str | None, series: str | None, limit: int | None,
        offset: int | None, get_remaining: bool, arguments: dict[str, Any],
    ) -> list[JSONDataset]:  # fmt: skip
        if not get_remaining:
            return self._client().search(level, study, series, limit=limit, offset=offset,
                                         **arguments)  # fmt: skip
        pages = self._client().search_pages(level, study, series, page_size=limit or PAGE_SIZE,
                                            offset=offset or 0, **arguments)  # fmt: skip
        return [dataset for page in pages for dataset in page]

    def search_for_studies(
        self,
        fuzzymatching: bool | None = None,
        limit: int | None = None,
        offset: int | None = None,
        fields: Sequence[str] | None = None,
        search_filters: dict[str, Any] | None = None,
        get_remaining: bool = False,
        additional_params: dict[str, Any] | None = None,
    ) -> list[JSONDataset]:
        """Search for studies (`search_studies`; `get_remaining` pages with `search_pages`)."""
        arguments = search_arguments(fuzzymatching, fields, search_filters, additional_params)
        return self._search("studies", None, None, limit, offset, get_remaining, arguments)

    def search_for_series(
        self,
        study_instance_uid: str | None = None,
        fuzzymatching: bool | None = None,
        limit: int | None = None,
        offset: int | None = None,
        fields: Sequence[str] | None = None,
        search_filters: dict[str, Any] | None = None,
        get_remaining: bool = False,
        additional_params: dict[str, Any] | None = None,
    ) -> list[JSONDataset]:
        """Search for series, of a study or of all (see `search_for_studies`)."""
        arguments = search_arguments(fuzzymatching, fields, search_filters, additional_params)
        return self._search("series", study_instance_uid, None, limit, offset, get_remaining,
                            arguments)  # fmt: skip

    def search_for_instances(
        self,
        study_instance_uid: str | None = None,
        series_instance_uid: str | None = None,
        fuzzymatching: bool | None = None,
        limit: int | None = None,
        offset: int | None = None,
        fields: Sequence[str] | None = None,
        search_filters: dict[str, Any] | None = None,
        get_remaining: bool = False,
        additional_params: dict[str, Any] | None = None,
    ) -> list[JSONDataset]:
        """Search for instances, of a series, a study or of all (see `search_for_studies`)."""
        study, series = search_scope(study_instance_uid, series_instance_uid)
        arguments = search_arguments(fuzzymatching, fields, search_filters, additional_params)
        return self._search("instances", study, series, limit, offset, get_remaining, arguments)

    # -- WADO-RS: instances ----------------------------------------------------------------

    def retrieve_study(
        self,
        study_instance_uid: str,
        media_types: MediaTypes | None = None,
        additional_params: dict[str, Any] | None = None,
    ) -> list[Dataset]:
        """Every instance of a study as Datasets (`retrieve_study`)."""
        syntax = dicom_syntax(media_types, "a study", None)
        bodies = self._client().retrieve_study(
            study_instance_uid, transfer_syntax=syntax, additional_params=additional_params
        )
        return [read_dataset(body) for body in bodies]

    def iter_study(
        self,
        study_instance_uid: str,
        media_types: MediaTypes | None = None,
        additional_params: dict[str, Any] | None = None,
    ) -> Iterator[Dataset]:
        """The instances of a study as they arrive (`stream_study`)."""
        syntax = dicom_syntax(media_types, "a study", None)
        opened = self._client().stream_study(
            study_instance_uid, transfer_syntax=syntax, additional_params=additional_params
        )
        return _started(opened, read_dataset)

    def retrieve_series(
        self,
        study_instance_uid: str,
        series_instance_uid: str,
        media_types: MediaTypes | None = None,
        additional_params: dict[str, Any] | None = None,
    ) -> list[Dataset]:
        """Every instance of a series as Datasets (`retrieve_series`)."""
        syntax = dicom_syntax(media_types, "a series", None)
        bodies = self._client().retrieve_series(
            study_instance_uid, series_instance_uid, transfer_syntax=syntax,
            additional_params=additional_params,
        )  # fmt: skip
        return [read_dataset(body) for body in bodies]

    def iter_series(
        self,
        study_instance_uid: str,
        series_instance_uid: str,
        media_types: MediaTypes | None = None,
        additional_params: dict[str, Any] | None = None,
    ) -> Iterator[Dataset]:
        """The instances of a series as they arrive (`stream_series`)."""
        syntax = dicom_syntax(media_types, "a series", None)
        opened = self._client().stream_series(
            study_instance_uid, series_instance_uid, transfer_syntax=syntax,
            additional_params=additional_params,
        )  # fmt: skip
        return _started(opened, read_dataset)

    def retrieve_instance(
        self,
        study_instance_uid: str,
        series_instance_uid: str,
        sop_instance_uid: str,
        media_types: MediaTypes | None = None,
        additional_params: dict[str, Any] | None = None,
    ) -> Dataset:
        """One instance as a Dataset, in any transfer syntax unless told (`retrieve_instance`)."""
        syntax = dicom_syntax(media_types, "an instance", "*")
        body = self._client().retrieve_instance(
            study_instance_uid, series_instance_uid, sop_instance_uid, transfer_syntax=syntax,
            additional_params=additional_params,
        )  # fmt: skip
        return read_dataset(body)

    # -- WADO-RS: metadata, frames, bulk data, rendered -------------------------------------

    def retrieve_study_metadata(
        self, study_instance_uid: str, additional_params: dict[str, Any] | None = None
    ) -> list[JSONDataset]:
        """The DICOM JSON metadata of a study's instances (`retrieve_study_metadata`)."""
        return self._client().retrieve_study_metadata(
            study_instance_uid, additional_params=additional_params
        )

    def retrieve_series_metadata(
        self,
        study_instance_uid: str,
        series_instance_uid: str,
        additional_params: dict[str, Any] | None = None,
    ) -> list[JSONDataset]:
        """The DICOM JSON metadata of a series' instances (`retrieve_series_metadata`)."""
        return self._client().retrieve_series_metadata(
            study_instance_uid, series_instance_uid, additional_params=additional_params
        )

    def retrieve_instance_metadata(
        self,
        study_instance_uid: str,
        series_instance_uid: str,
        sop_instance_uid: str,
        additional_params: dict[str, Any] | None = None,
    ) -> JSONDataset:
        """The DICOM JSON metadata of one instance (`retrieve_instance_metadata`)."""
        return self._client().retrieve_instance_metadata(
            study_instance_uid, series_instance_uid, sop_instance_uid,
            additional_params=additional_params,
        )  # fmt: skip

    def retrieve_instance_frames(
        self,
        study_instance_uid: str,
        series_instance_uid: str,
        sop_instance_uid: str,
        frame_numbers: Sequence[int],
        media_types: MediaTypes | None = None,
        additional_params: dict[str, Any] | None = None,
    ) -> list[bytes]:
        """Frames of an instance, one bytes object each (`retrieve_frames`)."""
        return self._client().retrieve_frames(
            study_instance_uid, series_instance_uid, sop_instance_uid, frame_numbers,
            media_type=part_types(media_types), transfer_syntax=None,
            additional_params=additional_params,
        )  # fmt: skip

    def iter_instance_frames(
        self,
        study_instance_uid: str,
        series_instance_uid: str,
        sop_instance_uid: str,
        frame_numbers: Sequence[int],
        media_types: MediaTypes | None = None,
        additional_params: dict[str, Any] | None = None,
    ) -> Iterator[bytes]:
        """Frames of an instance as they arrive (`stream_frames`)."""
        opened = self._client().stream_frames(
            study_instance_uid, series_instance_uid, sop_instance_uid, frame_numbers,
            media_type=part_types(media_types), transfer_syntax=None,
            additional_params=additional_params,
        )  # fmt: skip
        return _started(opened, _raw)

    def retrieve_bulkdata(
        self,
        url: str,
        media_types: MediaTypes | None = None,
        byte_range: tuple[int, int] | None = None,
        additional_params: dict[str, Any] | None = None,
    ) -> list[bytes]:
        """The bulk data at a `BulkDataURI` (`retrieve_bulkdata`)."""
        return self._client().retrieve_bulkdata(
            url, byte_range=core_range(byte_range), media_type=part_types(media_types),
            additional_params=additional_params,
        )  # fmt: skip

    def iter_bulkdata(
        self,
        url: str,
        media_types: MediaTypes | None = None,
        byte_range: tuple[int, int] | None = None,
        additional_params: dict[str, Any] | None = None,
    ) -> Iterator[bytes]:
        """The bulk data at a `BulkDataURI` as it arrives (`stream_bulkdata`)."""
        opened = self._client().stream_bulkdata(
            url, byte_range=core_range(byte_range), media_type=part_types(media_types),
            additional_params=additional_params,
        )  # fmt: skip
        return _started(opened, _raw)

    def retrieve_series_rendered(
        self,
        study_instance_uid: str,
        series_instance_uid: str,
        media_types: MediaTypes | None = None,
        params: dict[str, Any] | None = None,
    ) -> bytes:
        """A rendered series (`retrieve_rendered`; `params` go into the query as given)."""
        return self._client().retrieve_rendered(
            study_instance_uid, series_instance_uid, media_type=rendered_types(media_types),
            additional_params=params,
        )  # fmt: skip

    def retrieve_instance_rendered(
        self,
        study_instance_uid: str,
        series_instance_uid: str,
        sop_instance_uid: str,
        media_types: MediaTypes | None = None,
        params: dict[str, Any] | None = None,
    ) -> bytes:
        """A rendered instance (see `retrieve_series_rendered`)."""
        return self._client().retrieve_rendered(
            study_instance_uid, series_instance_uid, sop_instance_uid,
            media_type=rendered_types(media_types), additional_params=params,
        )  # fmt: skip

    def retrieve_instance_frames_rendered(
        self,
        study_instance_uid: str,
        series_instance_uid: str,
        sop_instance_uid: str,
        frame_numbers: Sequence[int],
        media_types: MediaTypes | None = None,
        params: dict[str, Any] | None = None,
    ) -> bytes:
        """Rendered frames of an instance (see `retrieve_series_rendered`)."""
        return self._client().retrieve_rendered(
            study_instance_uid, series_instance_uid, sop_instance_uid, frame=frame_numbers,
            media_type=rendered_types(media_types), additional_params=params,
        )  # fmt: skip

    # -- STOW-RS and DELETE --------------------------------------------------------------

    def store_instances(
        self,
        datasets: Sequence[Dataset],
        study_instance_uid: str | None = None,
        additional_params: dict[str, Any] | None = None,
    ) -> Dataset:
        """Store instances (`store`); the STOW-RS response as a Dataset.

        Raises:
            StoreFailedError: nothing was stored and something failed.
        """
        result = self._client().store(
            list(datasets), study_uid=study_instance_uid, additional_params=additional_params
        )
        return store_response(result)

    def delete_study(
        self, study_instance_uid: str, additional_params: dict[str, Any] | None = None
    ) -> None:
        """Delete a study with DICOMweb DELETE (`delete_study`; Orthanc answers 405)."""
        self._client().delete_study(study_instance_uid, additional_params=additional_params)

    def delete_series(
        self,
        study_instance_uid: str,
        series_instance_uid: str,
        additional_params: dict[str, Any] | None = None,
    ) -> None:
        """Delete a series (see `delete_study`)."""
        self._client().delete_series(
            study_instance_uid, series_instance_uid, additional_params=additional_params
        )

    def delete_instance(
        self,
        study_instance_uid: str,
        series_instance_uid: str,
        sop_instance_uid: str,
        additional_params: dict[str, Any] | None = None,
    ) -> None:
        """Delete an instance (see `delete_study`)."""
        self._client().delete_instance(
            study_instance_uid, series_instance_uid, sop_instance_uid,
            additional_params=additional_params,
        )  # fmt: skip
