"""Checked by `nox -s typecheck` (mypy --strict, `warn_unused_ignores`), never run.

Each wrong call must be an error: were the blocking client's constructor to lose
its real signature (`*args, **kwargs`), its ignore would become unused, and fail.
"""

from aiodicomweb import AsyncDicomWebClient, DicomWebClient, RetryPolicy

DicomWebClient("http://pacs/dicom-web", retry=RetryPolicy(max_attempts=2), max_parts=10)
DicomWebClient("http://pacs/dicom-web", retries=3)  # type: ignore[call-arg]
DicomWebClient("http://pacs/dicom-web", max_parts="many")  # type: ignore[arg-type]
DicomWebClient("http://pacs/dicom-web", delete_strategy="rest")  # type: ignore[arg-type]
AsyncDicomWebClient("http://pacs/dicom-web", retries=3)  # type: ignore[call-arg]
