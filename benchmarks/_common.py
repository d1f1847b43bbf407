"""Shared pieces of the benchmarks: the Orthanc testbed, data, timing child processes.

Every case runs in its own child process so that its peak RSS is its own
(`os.wait4`); wall time is measured around the child, in-process time is what
the child reports for the transfer alone (no interpreter start, no imports).
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.corpus import upload_instances  # noqa: E402
from tests.support.dicomgen import SeriesSpec, generate_series  # noqa: E402
from tests.support.orthanc import OrthancServer  # noqa: E402

SCRATCH = ROOT / ".bench-data"
ACCEPT_SERIES = 'multipart/related; type="application/dicom"; transfer-syntax=*'


@dataclass
class Measurement:
    """Repeated runs of one case."""

    name: str
    megabytes: float
    walls: list[float] = field(default_factory=list)
    inprocs: list[float] = field(default_factory=list)
    rss_mb: list[float] = field(default_factory=list)

    @property
    def wall(self) -> float:
        return statistics.median(self.walls)

    @property
    def inproc(self) -> float | None:
        return statistics.median(self.inprocs) if self.inprocs else None

    @property
    def rate(self) -> float:
        """MB/s from the in-process time when known, else from the wall time."""
        return self.megabytes / (self.inproc or self.wall)

    @property
    def peak_rss(self) -> float:
        return max(self.rss_mb)


def peak_rss_mb(pid: int | str = "self") -> float:
    """VmHWM of a process: its own peak RSS since exec, in MB.

    `ru_maxrss` from wait4 is not usable here: Linux carries the parent's RSS
    at fork time into it, so every child would look as big as this script.
    """
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def run_child(argv: Sequence[str]) -> tuple[float, float, dict[str, Any]]:
    """Run one child; return (wall seconds, peak RSS MB, the JSON of its last line or {}).

    Python workers report their own peak in their JSON line; for other programs
    (curl) VmHWM is sampled every few milliseconds while they run.
    """
    started = time.perf_counter()
    child = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=ROOT)
    peak = 0.0
    while child.poll() is None:
        try:
            peak = max(peak, peak_rss_mb(child.pid))
        except (OSError, ValueError):
            pass
        time.sleep(0.005)
    wall = time.perf_counter() - started
    out = child.stdout.read().decode() if child.stdout else ""
    if child.returncode != 0:
        raise RuntimeError(f"{argv[:3]} failed with status {child.returncode}: {out[-500:]}")
    last = out.strip().splitlines()[-1] if out.strip() else ""
    report = json.loads(last) if last.startswith("{") else {}
    return wall, float(report.get("peak_rss_mb", peak)), report


def measure(
    name: str, megabytes: float, argv: Sequence[str], runs: int, warmups: int = 1,
    out_root: Path = SCRATCH,
) -> Measurement:  # fmt: skip
    """Run a case `warmups + runs` times, writing under `out_root`; keep the last `runs`."""
    result = Measurement(name, megabytes)
    for index in range(warmups + runs):
        scratch = Path(tempfile.mkdtemp(dir=out_root))
        os.sync()  # start each run without the previous run's dirty pages to flush
        try:
            out_arg = [a.replace("{OUT}", str(scratch)) for a in argv]
            wall, rss, report = run_child(out_arg)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        if index < warmups:
            continue
        result.walls.append(wall)
        result.rss_mb.append(rss)
        if "seconds" in report:
            result.inprocs.append(float(report["seconds"]))
    return result


def start_orthanc(cache_mb: int = 1024) -> OrthancServer:
    return OrthancServer(storage_cache_mb=cache_mb).start()


def upload(server: OrthancServer, specs: Iterable[SeriesSpec]) -> float:
    """Generate and upload series; returns their size in MB (10^6 bytes)."""
    total = 0
    for spec in specs:
        batch = list(generate_series(spec))
        total += sum(len(i.data) for i in batch)
        upload_instances(server, batch)
    return total / 1e6


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (
        f"{os.cpu_count()} cores ({cpu}), Python {platform.python_version()}, {platform.system()}"
    )


def table(rows: list[list[str]], header: list[str]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)
