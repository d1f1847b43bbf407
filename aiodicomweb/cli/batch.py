"""The `batch` command: a manifest's studies and series into DIR/<study>/<series>/.

    aiodicomweb batch MANIFEST -o DIR [--report FILE] [--skip-invalid] [--max-requests N]
                      [--dask-scheduler tcp://HOST:PORT | --dask-workers N]

`add_batch` adds it to the command's subparsers as `build_parser` adds the others;
`cmd_batch` runs it. In-process, it uses the command's client; on Dask, the
command's connection options (`args.connection`), which the workers receive in a plugin.
"""

from __future__ import annotations

import argparse
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiodicomweb import AsyncDicomWebClient
from aiodicomweb.batch import (
    DEFAULT_MAX_REQUESTS,
    BatchProgress,
    BatchResult,
    ItemResult,
    ManifestError,
    download_manifest,
    download_manifest_async,
)
from aiodicomweb.cli.display import (
    Terminal,
    format_duration,
    format_seconds,
    format_size,
    throughput,
)

if TYPE_CHECKING:
    from aiodicomweb.cli.commands import Ui

__all__ = ["BatchDisplay", "add_batch", "batch_summary", "cmd_batch"]

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2
_SHOWN_FAILURES = 10


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1: {text!r}")
    return value


def add_batch(commands: Any) -> list[argparse.ArgumentParser]:
    """Add the `batch` subcommand to `commands` (the subparsers of `build_parser`)."""
    text = "download the studies and series of a manifest (CSV or JSON lines) into a folder"
    parser: argparse.ArgumentParser = commands.add_parser("batch", help=text, description=text)
    parser.set_defaults(handler=cmd_batch)
    add = parser.add_argument
    add("manifest", type=Path, metavar="MANIFEST",
        help="CSV with a header row (StudyInstanceUID, optional SeriesInstanceUID; other "
        "columns ignored) or JSON lines with the same keys")  # fmt: skip
    add("-o", "--output", required=True, type=Path, metavar="DIR",
        help="receives DIR/<study>/<series>/file000000.dcm ...; made if missing; a rerun "
        "skips the series completed before")  # fmt: skip
    add("--report", type=Path, metavar="FILE",
        help="one row per series: .csv, or .jsonl for JSON lines")  # fmt: skip
    add("--skip-invalid", action="store_true",
        help="download the valid rows even if some are invalid (reported as failed)")  # fmt: skip
    add("--max-requests", type=_count, default=DEFAULT_MAX_REQUESTS, metavar="N",
        help="requests in flight to the server, across all Dask workers too "
        f"(default {DEFAULT_MAX_REQUESTS})")  # fmt: skip
    add("--strategy", choices=("multipart", "per_instance"), default="multipart",
        help="one request per series, or per instance")  # fmt: skip
    add("--fallback", action="store_true", help="per instance when the server refuses multipart")
    dask = parser.add_argument_group("Dask (pip install 'aiodicomweb[dask]')")
    where = dask.add_mutually_exclusive_group()
    where.add_argument("--dask-scheduler", metavar="ADDRESS",
                       help="run the series as tasks on this Dask scheduler, e.g. "
                       "tcp://10.0.0.5:8786 (DIR must be the same shared folder on every "
                       "worker)")  # fmt: skip
    where.add_argument("--dask-workers", type=_count, metavar="N",
                       help="start a local Dask cluster of N worker processes")  # fmt: skip
    return [parser]


async def cmd_batch(client: AsyncDicomWebClient, args: argparse.Namespace, ui: Ui) -> int:
    """`batch MANIFEST -o DIR`: exit 1, with a summary, when any item failed."""
    display = BatchDisplay(ui.terminal, enabled=not ui.quiet)
    settings: dict[str, Any] = {
        "max_requests": args.max_requests,
        "skip_invalid": args.skip_invalid,
        "report": args.report,
        "progress": display.update,
        "strategy": args.strategy,
        "fallback": args.fallback,
    }
    try:
        if args.dask_scheduler is None and args.dask_workers is None:
            result = await download_manifest_async(
                args.manifest, args.output, client=client, **settings
            )
        else:
            # Blocks this loop on purpose: nothing else runs on it, and Ctrl-C, raised
            # in the batch at once, cancels its tasks and stops its cluster on the way out.
            with _interrupted_at_once():
                result = _on_dask(args, settings)
    except ManifestError as error:
        return _invalid_manifest(error, args, ui)
    finally:
        display.close()
    return _conclude(result, args, ui)


def _on_dask(args: argparse.Namespace, settings: dict[str, Any]) -> BatchResult:
    """The batch on Dask, with the command's connection options for the workers."""
    url, options = args.connection
    return download_manifest(
        args.manifest, args.output, url=url, scheduler=args.dask_scheduler,
        workers=args.dask_workers, **settings, **options,
    )  # fmt: skip


@contextmanager
def _interrupted_at_once() -> Iterator[None]:
    """Ctrl-C raises KeyboardInterrupt at once, where asyncio would wait for the loop."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _invalid_manifest(error: ManifestError, args: argparse.Namespace, ui: Ui) -> int:
    if not error.invalid:
        ui.error(str(error))
        return EXIT_USAGE
    for row in error.invalid[:_SHOWN_FAILURES]:
        ui.error(f"{args.manifest.name} line {row.line}: {row.reason}")
    if len(error.invalid) > _SHOWN_FAILURES:
        ui.error(f"and {len(error.invalid) - _SHOWN_FAILURES} more invalid rows")
    ui.error("nothing was downloaded: correct these rows, or add --skip-invalid")
    return EXIT_USAGE


def _conclude(result: BatchResult, args: argparse.Namespace, ui: Ui) -> int:
    ui.result(f"{batch_summary(result)}, into {result.root}")
    if result.ok:
        return EXIT_OK
    failures = result.with_status("failed")
    for item in failures[:_SHOWN_FAILURES]:
        ui.error(_failure(item))
    hidden = len(failures) - _SHOWN_FAILURES
    more = f" ({hidden} more not shown)" if hidden > 0 else ""
    where = f"; see {args.report}" if args.report is not None else ""
    ui.error(f"{len(failures)} of {len(result.items)} items failed{more}{where}")
    return EXIT_FAILURE


def batch_summary(result: BatchResult) -> str:
    """E.g. "Batch of 40 items: 38 downloaded, 2 skipped, 0 failed; 1200 instances
    (120.0 MB) in 5.20 s, 23.1 MB/s"."""
    return (
        f"Batch of {result.summary()}; {result.instances} instances "
        f"({format_size(result.bytes)}) in {format_seconds(result.seconds)}, "
        f"{throughput(result.bytes, result.seconds)}"
    )


def _failure(item: ItemResult) -> str:
    what = f"series {item.series_uid}" if item.series_uid else f"study {item.study_uid or '-'}"
    return f"line {item.line}, {what}: {item.error_type}: {item.error}"


class BatchDisplay:
    """Batch progress on the terminal: items, bytes, rate and ETA; failures as they come.

    On a terminal one status line is redrawn at most every `redraw_every` seconds;
    elsewhere a plain line is printed every `line_every` seconds.
    """

    def __init__(
        self,
        terminal: Terminal,
        *,
        enabled: bool = True,
        redraw_every: float = 0.1,
        line_every: float = 10.0,
    ) -> None:
        self.terminal = terminal
        self.enabled = enabled
        self._redraw_every = redraw_every
        self._line_every = line_every
        self._last_shown = time.monotonic()

    def update(self, progress: BatchProgress) -> None:
        """The progress callback of the batch."""
        if not self.enabled:
            return
        if progress.last is not None and progress.last.status == "failed":
            self.terminal.line(f"failed: {_failure(progress.last)}")
        now = time.monotonic()
        finished = progress.done == progress.items
        if self.terminal.tty:
            if now - self._last_shown >= self._redraw_every or finished:
                self._last_shown = now
                self.terminal.status(batch_status(progress)[: max(1, self.terminal.width - 1)])
        elif now - self._last_shown >= self._line_every:
            self._last_shown = now
            self.terminal.line(batch_status(progress))

    def close(self) -> None:
        self.terminal.clear_status()


def batch_status(progress: BatchProgress) -> str:
    """E.g. "batch  45%  18/40 items  1 failed  12.3 MB  21.0 MB/s  ETA 0:12"."""
    fields = [
        "batch",
        f"{progress.fraction * 100:.0f}%",
        f"{progress.done}/{progress.items} items",
        format_size(progress.bytes),
        throughput(progress.bytes, progress.elapsed),
    ]
    if progress.failed:
        fields.insert(3, f"{progress.failed} failed")
    eta = progress.eta
    if eta is not None and progress.done < progress.items:
        fields.append(f"ETA {format_duration(eta)}")
    return "  ".join(fields)
