"""The `aiodicomweb` command: search, download, store, delete and read metadata from a shell.

    aiodicomweb search studies|series|instances [-m KEY=VALUE]... [--json]
    aiodicomweb download STUDY [SERIES ...] -o DIR
    aiodicomweb store PATH... [--include REGEX] [--study UID]
    aiodicomweb delete study STUDY | delete series STUDY SERIES
    aiodicomweb metadata STUDY [SERIES [INSTANCE]] [--json]
    aiodicomweb batch MANIFEST -o DIR [--dask-workers N | --dask-scheduler ADDR]

Results go to standard output; progress, warnings and errors to standard error.
Exit status: 0 success, 1 failure or partial failure, 2 usage error, 130 interrupted.
"""

from __future__ import annotations

import argparse
import getpass
import inspect
import json
import logging
import os
import sys
import time
import traceback
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import anyio
import httpx

from aiodicomweb import (
    AsyncDicomWebClient,
    BearerTokenAuth,
    DeleteUnsupportedError,
    DicomWebError,
    DicomWebServerError,
    DicomWebTransportError,
    DicomWebUsageError,
    DownloadProgress,
    RetryPolicy,
    StoreResult,
    __version__,
    check_destination,
    find_dicom_files,
    validate_uid,
)
from aiodicomweb.cli.batch import add_batch
from aiodicomweb.cli.display import (
    Progress,
    Terminal,
    format_seconds,
    format_size,
    throughput,
)

__all__ = ["CliError", "build_parser", "format_table", "main"]

# The library's own default, shown in --help.
DEFAULT_CONCURRENCY = (
    inspect.signature(AsyncDicomWebClient.store).parameters["concurrency"].default
)

logger = logging.getLogger("aiodicomweb")

EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
Handler = Callable[[AsyncDicomWebClient, argparse.Namespace, "Ui"], Awaitable[int]]

# Table columns per search level, and shorter headers for the long keywords.
COLUMNS: dict[str, tuple[str, ...]] = {
    "studies": (
        "StudyInstanceUID",
        "PatientName",
        "PatientID",
        "StudyDate",
        "StudyDescription",
        "ModalitiesInStudy",
        "NumberOfStudyRelatedInstances",
    ),
    "series": (
        "SeriesInstanceUID",
        "Modality",
        "SeriesNumber",
        "SeriesDescription",
        "NumberOfSeriesRelatedInstances",
    ),
    "instances": ("SOPInstanceUID", "InstanceNumber", "SOPClassUID"),
}
HEADERS = {
    "ModalitiesInStudy": "Modalities",
    "NumberOfStudyRelatedInstances": "Instances",
    "NumberOfSeriesRelatedInstances": "Instances",
    "SeriesNumber": "Number",
    "InstanceNumber": "Number",
}
_MAX_CELL = 40

USAGE_NOTES = """\
connection settings may also come from the environment: DICOMWEB_URL,
DICOMWEB_USER, DICOMWEB_PASSWORD, DICOMWEB_TOKEN. With --user and no password
(--password-file, DICOMWEB_PASSWORD), it is asked for on the terminal: a
password given with --password is visible to other users in the process list.

exit status: 0 success, 1 failure or partial failure, 2 usage error,
130 interrupted."""


class CliError(Exception):
    """A failure the command reports in one line, with its exit status."""

    def __init__(self, message: str, code: int = EXIT_FAILURE) -> None:
        super().__init__(message)
        self.code = code


# -- output ---------------------------------------------------------------------


@dataclass
class Ui:
    """Where a command writes: results to `out`, everything else to `terminal`."""

    out: TextIO
    terminal: Terminal
    quiet: bool = False

    def result(self, text: str) -> None:
        """A result line (standard output), never silenced."""
        self.terminal.clear_status()
        self.out.write(text + "\n")
        self.out.flush()

    def info(self, text: str) -> None:
        """A feedback line, silenced by --quiet."""
        if not self.quiet:
            self.terminal.line(text)

    def warn(self, text: str) -> None:
        self.terminal.line(f"warning: {text}")

    def error(self, text: str) -> None:
        self.terminal.line(f"error: {' '.join(text.split())}")

    def progress(
        self, label: str, *, total_instances: int | None = None, total_bytes: int | None = None
    ) -> Progress:
        """A progress display on the terminal, disabled by --quiet."""
        return Progress(
            self.terminal,
            label,
            total_instances=total_instances,
            total_bytes=total_bytes,
            enabled=not self.quiet,
        )


class _TerminalLogHandler(logging.Handler):
    """Library log records as lines above the progress display."""

    def __init__(self, terminal: Terminal, debug: bool) -> None:
        super().__init__()
        self.terminal = terminal
        self.debug = debug

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
            if self.debug:
                stamp = time.strftime("%H:%M:%S", time.localtime(record.created))
                self.terminal.line(f"{stamp} {record.levelname} {record.name}: {message}")
            else:
                self.terminal.line(f"{record.levelname.lower()}: {message}")
        except Exception:
            self.handleError(record)


@contextmanager
def _library_logging(terminal: Terminal, *, debug: bool, quiet: bool) -> Iterator[None]:
    """Route the "aiodicomweb" logger to the terminal for one command, then restore it."""
    saved = logger.level, logger.propagate
    handler = _TerminalLogHandler(terminal, debug)
    logger.setLevel(logging.DEBUG if debug else logging.ERROR if quiet else logging.WARNING)
    logger.addHandler(handler)
    logger.propagate = False
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(saved[0])
        logger.propagate = saved[1]


def element_text(dataset: dict[str, Any], keyword: str) -> str:
    """The values of a DICOM JSON attribute as text (person names alphabetic, comma-joined)."""
    from pydicom.datadict import tag_for_keyword  # 0.4 s: only for commands that print tables

    tag = tag_for_keyword(keyword)
    element = dataset.get(f"{tag:08X}") if tag is not None else None
    values = element.get("Value") if isinstance(element, dict) else None
    if not isinstance(values, list):
        return ""
    return ",".join(_value_text(value) for value in values)


def _value_text(value: object) -> str:
    if isinstance(value, dict):
        name = value.get("Alphabetic") or value.get("Ideographic") or value.get("Phonetic")
        return str(name or "")
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _fit(text: str, keyword: str) -> str:
    if keyword.endswith("UID") or len(text) <= _MAX_CELL:
        return text
    return text[: _MAX_CELL - 3] + "..."


def format_table(columns: Sequence[str], datasets: Sequence[dict[str, Any]]) -> str:
    """A plain-text table of `datasets` (DICOM JSON); UIDs are never shortened."""
    rows = [[HEADERS.get(keyword, keyword) for keyword in columns]]
    rows.append(["-" * len(header) for header in rows[0]])
    rows += [[_fit(element_text(ds, keyword), keyword) for keyword in columns] for ds in datasets]
    widths = [max(len(row[i]) for row in rows) for i in range(len(columns))]
    lines = (
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        for row in rows
    )
    return "\n".join(line.rstrip() for line in lines)


# -- commands ---------------------------------------------------------------------


def _match(pairs: Sequence[tuple[str, str]]) -> dict[str | int, object]:
    """`-m` pairs as match keys; a repeated key becomes a value list (`a,b`)."""
    match: dict[str | int, object] = {}
    for key, value in pairs:
        previous = match.get(key)
        if previous is None:
            match[key] = value
        else:
            match[key] = [*(previous if isinstance(previous, list) else [previous]), value]
    return match


async def cmd_search(client: AsyncDicomWebClient, args: argparse.Namespace, ui: Ui) -> int:
    """`search studies|series|instances`: a table, or DICOM JSON lines with --json."""
    columns = COLUMNS[args.level]
    include: list[str] = list(args.include)
    # The table's fields, with --json too; "all" leaves some out on Orthanc.
    include += [keyword for keyword in columns if keyword not in include]
    results = await client.search(
        args.level,
        getattr(args, "study", None),
        getattr(args, "series", None),
        _match(args.match),
        include_fields=include or None,
        fuzzy=True if args.fuzzy else None,
        limit=args.limit,
        offset=args.offset,
    )
    if args.json:
        for dataset in results:
            ui.result(json.dumps(dataset))
    elif results:
        ui.result(format_table(columns, results))
    if not results:
        ui.info(f"no {args.level} found")
    return EXIT_OK


async def _download_plan(
    client: AsyncDicomWebClient, study_uid: str, series: Sequence[str], dest: Path, merge: bool
) -> tuple[list[str], int | None]:
    """The series to download and their instance count, checked against the server."""
    validate_uid(study_uid, "StudyInstanceUID")
    for uid in series:
        validate_uid(uid, "SeriesInstanceUID")
    _check_output(dest, merge)  # before asking the server anything
    counts = await client.list_series(study_uid)
    if not counts:
        raise CliError(f"study {study_uid} not found on the server")
    selected = list(dict.fromkeys(series)) or list(counts)
    missing = [uid for uid in selected if uid not in counts]
    if missing:
        raise CliError(f"not in study {study_uid}: series {', '.join(missing)}")
    if merge:
        _check_free(dest, selected)
    known = [counts[uid] for uid in selected]
    total = None if None in known else sum(n for n in known if n is not None)
    return selected, total


def _check_output(dest: Path, merge: bool) -> None:
    if merge and dest.is_dir():
        return
    try:
        check_destination(dest)
    except FileExistsError:
        raise CliError(
            f"{dest} already exists: choose a new folder, or add --merge to put the "
            "study's series beside what it holds"
        ) from None


def _check_free(dest: Path, series: Sequence[str]) -> None:
    there = [uid for uid in series if os.path.lexists(dest / uid)]
    if there:
        raise CliError(f"{dest} already holds series {', '.join(there)}; nothing was downloaded")


def _instances(count: int) -> str:
    return f"{count} instance" if count == 1 else f"{count} instances"


def transfer_summary(verb: str, instances: int, size: int, seconds: float) -> str:
    """E.g. "Downloaded 300 instances (39.5 MB) in 1.42 s, 27.8 MB/s"."""
    return (
        f"{verb} {_instances(instances)} ({format_size(size)}) in {format_seconds(seconds)}, "
        f"{throughput(size, seconds)}"
    )


def _download_feedback(progress: Progress) -> Callable[[DownloadProgress], None]:
    def feedback(event: DownloadProgress) -> None:
        progress.update(event.total_instances, event.total_bytes)
        if event.series_done:
            progress.note(
                f"series {event.series_uid}: {event.series_instances} instances, "
                f"{format_size(event.series_bytes)}"
            )

    return feedback


async def cmd_download(client: AsyncDicomWebClient, args: argparse.Namespace, ui: Ui) -> int:
    """`download STUDY [SERIES ...] -o DIR`: DIR (new) receives one folder per series."""
    selected, total = await _download_plan(
        client, args.study, args.series, args.output, args.merge
    )
    shown = "?" if total is None else str(total)
    ui.info(
        f"Downloading {shown} instances in {len(selected)} series of study {args.study} "
        f"into {args.output}"
    )
    progress = ui.progress("download", total_instances=total)
    try:
        result = await client.download_study(
            args.study,
            args.output,
            strategy=args.strategy,
            fallback=args.fallback,
            series_concurrency=args.series_concurrency,
            concurrency=args.concurrency,
            progress=None if ui.quiet else _download_feedback(progress),
            series_uids=selected,  # listed once, by the plan
            merge=args.merge,
        )
    finally:
        progress.close()
    summary = transfer_summary("Downloaded", result.instances, result.bytes, result.seconds)
    ui.result(f"{summary}, into {result.path}")
    return EXIT_OK


StoreFile = tuple[Path, int]


def collect_store_files(
    paths: Sequence[Path], include_regex: str | None
) -> tuple[list[StoreFile], StoreResult]:
    """Files to store with their sizes, and a result listing the unreadable and the
    skipped ones, from files and folders (as `find_dicom_files` finds them).

    Raises:
        FileNotFoundError: a path does not exist.
        DicomWebUsageError: a named file is not DICOM, or `include_regex` is invalid.
    """
    found = find_dicom_files(paths, include_regex)
    sized = [(path, path.stat().st_size) for path in found.files]
    return sized, StoreResult((), tuple(found.unreadable), skipped=tuple(found.skipped))


async def _store_with_progress(
    client: AsyncDicomWebClient, args: argparse.Namespace, ui: Ui, files: Sequence[StoreFile]
) -> tuple[StoreResult, float]:
    """Store `files` under a progress display; returns the result and the seconds taken."""
    total = sum(size for _, size in files)
    ui.info(f"Storing {_instances(len(files))} ({format_size(total)})")
    progress = ui.progress("store", total_instances=len(files), total_bytes=total)
    started = time.perf_counter()
    try:
        result = await client.store(
            [path for path, _ in files],
            study_uid=args.study,
            concurrency=args.concurrency,
            progress=lambda done: progress.update(done.instances, done.bytes),
        )
    except DicomWebServerError as error:
        if not progress.instances:
            raise
        raise CliError(
            f"{error} (before that, {progress.instances} of {_instances(len(files))} were stored)"
        ) from error
    finally:
        progress.close()
    return result, time.perf_counter() - started


async def cmd_store(client: AsyncDicomWebClient, args: argparse.Namespace, ui: Ui) -> int:
    """`store PATH...`: exit 1 with a summary when any instance was not stored."""
    files, result = await anyio.to_thread.run_sync(collect_store_files, args.paths, args.include)
    if not files and not result.failed:
        raise CliError(f"no DICOM files found to store ({result.summary()})")
    unreadable, seconds = len(result.failed), 0.0
    if files:
        stored, seconds = await _store_with_progress(client, args, ui, files)
        result = result.merge(stored)
    total = sum(size for _, size in files)
    for warning in result.warnings:
        ui.warn(warning)
    if result.ok:
        ui.result(transfer_summary("Stored", len(result.stored), total, seconds))
        if result.skipped:
            ui.result(result.summary())
        return EXIT_OK
    attempted = len(files) + unreadable
    ui.result(
        f"Stored {len(result.stored)} of {_instances(attempted)} "
        f"({format_size(total)} sent in {format_seconds(seconds)})"
    )
    ui.error(f"not everything was stored: {result.summary()}")
    return EXIT_FAILURE


async def cmd_delete(client: AsyncDicomWebClient, args: argparse.Namespace, ui: Ui) -> int:
    """`delete study STUDY` / `delete series STUDY SERIES`."""
    try:
        if args.level == "study":
            await client.delete_study(args.study)
        else:
            await client.delete_series(args.study, args.series)
    except DeleteUnsupportedError as error:
        hint = "the server has no DICOMweb DELETE (for Orthanc, add --delete-strategy orthanc)"
        raise CliError(f"{error.method} {error.url}: 405 Method Not Allowed; {hint}") from error
    what = f"study {args.study}" if args.level == "study" else f"series {args.series}"
    ui.result(f"Deleted {what}")
    return EXIT_OK


async def cmd_metadata(client: AsyncDicomWebClient, args: argparse.Namespace, ui: Ui) -> int:
    """`metadata STUDY [SERIES [INSTANCE]]`: DICOM JSON, pretty or one dataset per line."""
    data: list[dict[str, Any]] | dict[str, Any]
    if args.instance is not None:
        data = await client.retrieve_instance_metadata(args.study, args.series, args.instance)
    elif args.series is not None:
        data = await client.retrieve_series_metadata(args.study, args.series)
    else:
        data = await client.retrieve_study_metadata(args.study)
    if not args.json:
        ui.result(json.dumps(data, indent=2))
        return EXIT_OK
    for dataset in data if isinstance(data, list) else [data]:
        ui.result(json.dumps(dataset))
    return EXIT_OK


# -- arguments ---------------------------------------------------------------------


def _positive_int(text: str) -> int:
    value = _non_negative_int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1: {text!r}")
    return value


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative: {text!r}")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0: {text!r}")
    return value


def _match_pair(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE: {text!r}")
    return key.strip(), value


def _add_common(parser: argparse.ArgumentParser, *, suppress: bool) -> None:
    """Connection and feedback options; on subcommands they only override when given."""

    def default(value: object) -> object:
        return argparse.SUPPRESS if suppress else value

    connection = parser.add_argument_group("connection")
    add = connection.add_argument
    add("--url", default=default(None), help="DICOMweb base URL [env DICOMWEB_URL]")
    add("--user", default=default(None), help="user for basic auth [env DICOMWEB_USER]")
    add(
        "--password",
        default=default(None),
        help="password: other users can read it in the process list; prefer "
        "--password-file, DICOMWEB_PASSWORD or the prompt (when none is given)",
    )
    add(
        "--password-file",
        type=Path,
        default=default(None),
        help="read the password from this file (its trailing newline dropped)",
    )
    add("--token", default=default(None), help="bearer token [env DICOMWEB_TOKEN]")
    add(
        "--cacert",
        type=Path,
        default=default(None),
        metavar="FILE",
        help="CA certificates (PEM) to verify the server with, e.g. a hospital's own CA "
        "[env SSL_CERT_FILE or REQUESTS_CA_BUNDLE; SSL_CERT_DIR for a folder]",
    )
    add(
        "--insecure",
        action="store_true",
        default=default(False),
        help="do not verify TLS certificates (prefer --cacert)",
    )
    add(
        "--proxy",
        default=default(None),
        metavar="URL",
        help="HTTP(S) proxy, e.g. http://proxy:3128 [env HTTPS_PROXY, HTTP_PROXY, ALL_PROXY, "
        "NO_PROXY]",
    )
    add(
        "--timeout",
        type=_seconds,
        default=default(None),
        metavar="SECONDS",
        help="read timeout per request (default 60)",
    )
    add(
        "--retries",
        type=_non_negative_int,
        default=default(None),
        metavar="N",
        help="retries of a failed request (default 4; 0 turns retries off)",
    )
    add(
        "--min-rate",
        type=_non_negative_int,
        default=default(None),
        metavar="BYTES",
        help="end a transfer slower than this many bytes/s for a whole --min-rate-window "
        "(default 1024; 0 turns it off; curl's --speed-limit)",
    )
    add(
        "--min-rate-window",
        type=_seconds,
        default=default(None),
        metavar="SECONDS",
        help="the window of --min-rate (default 60; curl's --speed-time)",
    )
    _add_feedback(parser, default)


def _add_feedback(parser: argparse.ArgumentParser, default: Callable[[object], object]) -> None:
    feedback = parser.add_argument_group("feedback")
    feedback.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        default=default(False),
        help="no progress or notes, only results and errors",
    )
    feedback.add_argument(
        "--debug", action="store_true", default=default(False), help="debug logging and tracebacks"
    )


def _subparser(
    commands: Any, name: str, handler: Handler | None, help_text: str
) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = commands.add_parser(
        name, help=help_text, description=help_text
    )
    if handler is not None:
        parser.set_defaults(handler=handler)
    return parser


def _add_search(commands: Any) -> list[argparse.ArgumentParser]:
    search = _subparser(commands, "search", None, "search with QIDO-RS")
    made = [search]
    levels = search.add_subparsers(dest="level", metavar="LEVEL", required=True)
    for level in ("studies", "series", "instances"):
        parser = _subparser(levels, level, cmd_search, f"search {level}")
        made.append(parser)
        parser.add_argument(
            "-m",
            "--match",
            action="append",
            type=_match_pair,
            default=[],
            metavar="KEY=VALUE",
            help="match key (keyword or tag), repeatable; wildcards * and ?, ranges A-B",
        )
        if level != "studies":
            parser.add_argument("--study", metavar="UID", help="only within this study")
        if level == "instances":
            parser.add_argument("--series", metavar="UID", help="only within this series")
        parser.add_argument(
            "--include",
            action="append",
            default=[],
            metavar="FIELD",
            help="extra attribute to return, repeatable, or 'all'",
        )
        parser.add_argument("--limit", type=_non_negative_int, metavar="N")
        parser.add_argument("--offset", type=_non_negative_int, metavar="N")
        parser.add_argument("--fuzzy", action="store_true", help="fuzzy person-name matching")
        parser.add_argument(
            "--json", action="store_true", help="one DICOM JSON object per line instead of a table"
        )
    return made


def _add_download(commands: Any) -> list[argparse.ArgumentParser]:
    parser = _subparser(
        commands,
        "download",
        cmd_download,
        "download a study, or some of its series, into a new folder",
    )
    parser.add_argument("study", metavar="STUDY")
    parser.add_argument(
        "series", metavar="SERIES", nargs="*", default=[], help="only these series (default: all)"
    )
    parser.add_argument(
        "-o",
        "--output",
        required=True,
        type=Path,
        metavar="DIR",
        help="folder to create (missing parents are made; DIR itself must not exist "
        "unless --merge); receives DIR/<SERIES>/file000000.dcm ... and appears "
        "complete or not at all",
    )
    parser.add_argument(
        "--merge",
        action="store_true",
        help="DIR may exist: add the study's series beside what it holds "
        "(a series folder already there is refused)",
    )
    parser.add_argument(
        "--strategy",
        choices=("multipart", "per_instance"),
        default="multipart",
        help="one request per series, or per instance",
    )
    parser.add_argument(
        "--fallback", action="store_true", help="per instance when the server refuses multipart"
    )
    parser.add_argument(
        "--concurrency",
        type=_positive_int,
        default=4,
        metavar="N",
        help="instances in flight per series with per_instance (default 4)",
    )
    parser.add_argument(
        "--series-concurrency",
        type=_positive_int,
        default=3,
        metavar="N",
        help="series downloaded at once (default 3)",
    )
    return [parser]


def _add_store(commands: Any) -> list[argparse.ArgumentParser]:
    parser = _subparser(commands, "store", cmd_store, "store files and folders with STOW-RS")
    parser.add_argument(
        "paths",
        nargs="+",
        type=Path,
        metavar="PATH",
        help="DICOM file, or folder searched recursively",
    )
    parser.add_argument(
        "--include",
        metavar="REGEX",
        help="in folders, only paths (relative, with /) matching REGEX",
    )
    parser.add_argument("--study", metavar="UID", help="post to this study only")
    parser.add_argument(
        "--concurrency",
        type=_positive_int,
        default=DEFAULT_CONCURRENCY,
        metavar="N",
        help=f"requests in flight (default {DEFAULT_CONCURRENCY})",
    )
    return [parser]


def _add_delete(commands: Any) -> list[argparse.ArgumentParser]:
    delete = _subparser(commands, "delete", None, "delete a study or a series")
    levels = delete.add_subparsers(dest="level", metavar="LEVEL", required=True)
    study = _subparser(levels, "study", cmd_delete, "delete a study")
    study.add_argument("study", metavar="STUDY")
    series = _subparser(levels, "series", cmd_delete, "delete a series")
    series.add_argument("study", metavar="STUDY")
    series.add_argument("series", metavar="SERIES")
    for parser in (study, series):
        parser.add_argument(
            "--delete-strategy",
            choices=("dicomweb", "orthanc"),
            default="dicomweb",
            help="standard DELETE, or Orthanc's REST API",
        )
    return [delete, study, series]


def _add_metadata(commands: Any) -> list[argparse.ArgumentParser]:
    parser = _subparser(
        commands,
        "metadata",
        cmd_metadata,
        "print the DICOM JSON metadata of a study, series or instance",
    )
    parser.add_argument("study", metavar="STUDY")
    parser.add_argument("series", metavar="SERIES", nargs="?")
    parser.add_argument("instance", metavar="INSTANCE", nargs="?")
    parser.add_argument("--json", action="store_true", help="one dataset per line")
    return [parser]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the `aiodicomweb` command."""
    parser = argparse.ArgumentParser(
        prog="aiodicomweb",
        description="A DICOMweb client: QIDO-RS search, WADO-RS download, STOW-RS store.",
        epilog=USAGE_NOTES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    _add_common(parser, suppress=False)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add in (_add_search, _add_download, _add_store, _add_delete, _add_metadata, add_batch):
        for subparser in add(commands):
            _add_common(subparser, suppress=True)
    return parser


# -- running ---------------------------------------------------------------------


def _credentials(args: argparse.Namespace) -> httpx.Auth | tuple[str, str] | None:
    """Basic or bearer auth from the options, else from the environment."""
    user, token = args.user or None, args.token or None
    if user is None and token is None:
        user = os.environ.get("DICOMWEB_USER") or None
        token = os.environ.get("DICOMWEB_TOKEN") or None
    if user is not None and token is not None:
        raise CliError("give a user or a token, not both", EXIT_USAGE)
    if token is not None:
        return BearerTokenAuth(token)
    if user is None:
        return None
    password = args.password if args.password is not None else _password_from_file(args)
    if password is None:
        password = os.environ.get("DICOMWEB_PASSWORD")
    if password is None:
        if not sys.stdin.isatty():
            raise CliError(f"no password for user {user!r}: set DICOMWEB_PASSWORD", EXIT_USAGE)
        password = getpass.getpass(f"Password for {user}: ")
    return (user, password)


def _password_from_file(args: argparse.Namespace) -> str | None:
    path: Path | None = args.password_file
    if path is None:
        return None
    try:
        return path.read_text().rstrip("\r\n")
    except (OSError, UnicodeDecodeError) as error:
        raise CliError(f"cannot read --password-file: {error}", EXIT_USAGE) from None


def client_options(args: argparse.Namespace) -> tuple[str, dict[str, Any]]:
    """The server URL and the `AsyncDicomWebClient` keyword arguments the options ask for.

    Raises:
        CliError: no URL, or conflicting credentials (usage errors).
    """
    url = args.url or os.environ.get("DICOMWEB_URL")
    if not url:
        raise CliError("no server URL: give --url or set DICOMWEB_URL", EXIT_USAGE)
    options: dict[str, Any] = {"auth": _credentials(args)}
    if args.insecure and args.cacert is not None:
        raise CliError("--insecure and --cacert contradict each other: give one", EXIT_USAGE)
    if args.insecure:
        options["verify"] = False
    elif args.cacert is not None:
        options["verify"] = str(args.cacert)
    if args.proxy is not None:
        options["proxy"] = args.proxy
    if args.timeout is not None:
        options["timeout"] = httpx.Timeout(args.timeout, connect=min(args.timeout, 10.0))
    if args.min_rate is not None:
        options["min_rate"] = args.min_rate or None
    if args.min_rate_window is not None:
        options["min_rate_window"] = args.min_rate_window
    if args.retries is not None:
        options["retry"] = RetryPolicy(max_attempts=args.retries + 1) if args.retries else None
    if getattr(args, "delete_strategy", None) is not None:
        options["delete_strategy"] = args.delete_strategy
    return url, options


async def _run(args: argparse.Namespace, url: str, options: dict[str, Any], ui: Ui) -> int:
    handler: Handler = args.handler
    args.connection = (url, options)  # for commands that build clients elsewhere (batch)
    async with AsyncDicomWebClient(url, **options) as client:
        return await handler(client, args, ui)


def exit_code(error: BaseException) -> int:
    """1 for failures, 2 for what the caller got wrong."""
    if isinstance(error, CliError):
        return error.code
    if isinstance(error, DicomWebUsageError):
        return EXIT_USAGE
    if isinstance(error, (DicomWebError, OSError)):
        return EXIT_FAILURE
    return EXIT_USAGE if isinstance(error, ValueError) else EXIT_FAILURE


def error_message(error: BaseException) -> str:
    """One line for people: no traceback, no errno noise."""
    if isinstance(error, OSError) and not isinstance(error, DicomWebError) and error.strerror:
        return f"{error.strerror}: {error.filename}" if error.filename else error.strerror
    text = str(error) or type(error).__name__
    if isinstance(error, DicomWebTransportError) and "certificate verify failed" in text:
        text += (
            "; if the server's certificate comes from a private CA, pass it with --cacert "
            "FILE (or set SSL_CERT_FILE); behind a TLS-inspecting proxy, its CA and --proxy URL"
        )
    if not isinstance(error, (CliError, DicomWebError, OSError, ValueError)):
        text = f"unexpected {type(error).__name__}: {text} (run with --debug for details)"
    return text


def _report(error: BaseException, ui: Ui, *, debug: bool) -> int:
    ui.terminal.clear_status()
    if isinstance(error, BrokenPipeError):
        # The reader went away (`| head`): stop quietly, as shell tools do, and
        # keep the interpreter's final flush of stdout from failing again.
        with suppress(OSError, ValueError, AttributeError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_FAILURE
    if debug:
        traceback.print_exception(type(error), error, error.__traceback__, file=sys.stderr)
    ui.error(error_message(error))
    return exit_code(error)


def _parse(argv: Sequence[str] | None) -> argparse.Namespace | int:
    try:
        return build_parser().parse_args(argv)
    except SystemExit as done:  # --help, --version, usage errors (already printed)
        return done.code if isinstance(done.code, int) else EXIT_USAGE if done.code else EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """Run the `aiodicomweb` command; returns the exit status.

    Args:
        argv: The arguments without the program name; `sys.argv[1:]` when None.

    Returns:
        0 success, 1 failure or partial failure, 2 usage error, 130 interrupted.
    """
    args = _parse(argv)
    if isinstance(args, int):
        return args
    ui = Ui(sys.stdout, Terminal(sys.stderr), quiet=args.quiet)
    with _library_logging(ui.terminal, debug=args.debug, quiet=args.quiet):
        try:
            url, options = client_options(args)
            if args.insecure:
                ui.warn("TLS certificate verification is disabled (--insecure)")
            return anyio.run(_run, args, url, options, ui, backend="asyncio")
        except KeyboardInterrupt:
            ui.terminal.clear_status()
            ui.error("interrupted")
            return EXIT_INTERRUPTED
        except Exception as error:
            return _report(error, ui, debug=args.debug)
