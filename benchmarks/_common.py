"""Shared pieces of the benchmarks: the Orthanc testbed, data, timing child processes.

Every case runs in its own child process so that its peak RSS and CPU time are
its own; wall time is measured around the child, in-process time is what the
child reports for the transfer alone (no interpreter start, no imports), and so
is transfer CPU time. The https rows go through `TlsFront` (nginx terminating
TLS) in front of the same Orthanc, with throw-away certificates.
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
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.corpus import upload_instances  # noqa: E402
from tests.support.dicomgen import SeriesSpec, generate_series  # noqa: E402
from tests.support.orthanc import OrthancServer  # noqa: E402

if TYPE_CHECKING:
    from tests.support.certs import Certificates
    from tests.support.tls import TlsFront

SCRATCH = ROOT / ".bench-data"
ACCEPT_SERIES = 'multipart/related; type="application/dicom"; transfer-syntax=*'


@dataclass
class Measurement:
    """Repeated runs of one case.

    `cpus` is the whole child's user + sys time (from `os.wait4`: interpreter
    start and imports included); `transfer_cpus` what a Python child reports
    for the transfer alone (`getrusage(RUSAGE_SELF)` around it, all threads).
    """

    name: str
    megabytes: float
    walls: list[float] = field(default_factory=list)
    inprocs: list[float] = field(default_factory=list)
    rss_mb: list[float] = field(default_factory=list)
    cpus: list[float] = field(default_factory=list)
    transfer_cpus: list[float] = field(default_factory=list)

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

    @property
    def cpu(self) -> float:
        """Median CPU seconds (user + sys) of the whole child process."""
        return statistics.median(self.cpus)

    @property
    def transfer_cpu(self) -> float:
        """Median CPU seconds of the transfer when the child reports it, else of the child.

        The same rule as `rate`: curl reports no CPU of its own, and its start
        costs it a few milliseconds where a Python child's costs hundreds.
        """
        return statistics.median(self.transfer_cpus or self.cpus)

    @property
    def cpu_per_gb(self) -> float:
        """CPU seconds per GB (10^9 bytes) moved, from `transfer_cpu`."""
        return self.transfer_cpu / (self.megabytes / 1000)


def peak_rss_mb(pid: int | str = "self") -> float:
    """VmHWM of a process: its own peak RSS since exec, in MB.

    `ru_maxrss` from wait4 is not usable here: Linux carries the parent's RSS
    at fork time into it, so every child would look as big as this script.
    """
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


@dataclass
class ChildRun:
    """What one child cost: wall seconds, peak RSS MB, CPU seconds, its JSON report."""

    wall: float
    rss_mb: float
    cpu: float
    report: dict[str, Any]


def run_child(argv: Sequence[str], env: Mapping[str, str] | None = None) -> ChildRun:
    """Run one child (with `env` added to this process's environment) and measure it.

    Python workers report their own peak in their JSON line; for other programs
    (curl) VmHWM is sampled every few milliseconds while they run. The child is
    reaped with `os.wait4`, whose user and sys times are the child's own (and
    its reaped children's): unlike `ru_maxrss`, they owe nothing to the fork.
    """
    environment = None if env is None else {**os.environ, **env}
    # Files, not pipes: a child writing more than a pipe holds would block, unread.
    with tempfile.TemporaryFile() as output, tempfile.TemporaryFile() as errors:
        started = time.perf_counter()
        child = subprocess.Popen(argv, stdout=output, stderr=errors, cwd=ROOT, env=environment)
        peak = 0.0
        try:
            while True:
                pid, status, usage = os.wait4(child.pid, os.WNOHANG)
                if pid:
                    break
                try:
                    peak = max(peak, peak_rss_mb(child.pid))
                except (OSError, ValueError):
                    pass
                time.sleep(0.005)
        except BaseException:  # Ctrl-C: no child outlives the benchmark
            child.kill()
            child.wait()
            raise
        wall = time.perf_counter() - started
        child.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
        output.seek(0)
        out = output.read().decode(errors="replace")
        if child.returncode != 0:
            errors.seek(0)
            tail = errors.read().decode(errors="replace")[-1000:]
            raise RuntimeError(
                f"{list(argv[:3])} failed with status {child.returncode}: {out[-500:]}{tail}"
            )
    last = out.strip().splitlines()[-1] if out.strip() else ""
    report = json.loads(last) if last.startswith("{") else {}
    cpu = usage.ru_utime + usage.ru_stime
    return ChildRun(wall, float(report.get("peak_rss_mb", peak)), cpu, report)


def measure(
    cases: Sequence[tuple[str, Sequence[str], Mapping[str, str] | None]], megabytes: float,
    runs: int, warmups: int = 1, out_root: Path = SCRATCH,
) -> list[Measurement]:  # fmt: skip
    """Run each case (name, argv, env) `warmups + runs` times, in rounds; keep the last `runs`.

    Each round runs every case once, so that a slow spell of the machine (another
    process, the kernel writing back pages) falls on all cases alike rather than
    on whichever ran during it.
    """
    results = [Measurement(name, megabytes) for name, _, _ in cases]
    for index in range(warmups + runs):
        for (_, argv, env), result in zip(cases, results, strict=True):
            scratch = Path(tempfile.mkdtemp(dir=out_root))
            os.sync()  # start each run without the previous run's dirty pages to flush
            try:
                out_arg = [a.replace("{OUT}", str(scratch)) for a in argv]
                run = run_child(out_arg, env)
            finally:
                shutil.rmtree(scratch, ignore_errors=True)
            if index < warmups:
                continue
            result.walls.append(run.wall)
            result.rss_mb.append(run.rss_mb)
            result.cpus.append(run.cpu)
            if "seconds" in run.report:
                result.inprocs.append(float(run.report["seconds"]))
            if "cpu_seconds" in run.report:
                result.transfer_cpus.append(float(run.report["cpu_seconds"]))
    return results


def start_orthanc(cache_mb: int = 1024) -> OrthancServer:
    return OrthancServer(storage_cache_mb=cache_mb, purpose="the benchmarks").start()


@dataclass
class HttpsFront:
    """nginx terminating TLS in front of the benchmark's Orthanc, and the CA clients trust.

    The same Orthanc serves the http and the https rows, so that their ratios
    compare the clients and TLS, not two servers.
    """

    front: TlsFront
    certificates: Certificates

    @property
    def dicomweb_url(self) -> str:
        return self.front.dicomweb_url

    @property
    def ca(self) -> str:
        """The throw-away CA's PEM file: curl `--cacert`, httpx and aiodicomweb `verify=`."""
        return str(self.certificates.ca)

    @property
    def env(self) -> dict[str, str]:
        """The CA for child processes: aiodicomweb reads `SSL_CERT_FILE` (trust_env),
        dicomweb-client's requests `REQUESTS_CA_BUNDLE`."""
        return {"SSL_CERT_FILE": self.ca, "REQUESTS_CA_BUNDLE": self.ca}

    def curl_args(self) -> list[str]:
        return ["--cacert", self.ca]

    def stop(self) -> None:
        """Stop the nginx this front started and remove the certificates."""
        self.front.stop()
        shutil.rmtree(self.certificates.folder, ignore_errors=True)


def start_https(server: OrthancServer) -> HttpsFront:
    """A TlsFront with fresh certificates in front of `server` (stopped by the caller).

    Imported here, not at the top: trustme and nginx are only needed for https.
    """
    from tests.support.certs import Certificates
    from tests.support.tls import TlsFront

    certificates = Certificates()
    front = TlsFront(server.root, certificates.server)
    try:
        front.start()  # stops itself (and removes its folder) when it fails
    except BaseException:
        shutil.rmtree(certificates.folder, ignore_errors=True)
        raise
    return HttpsFront(front, certificates)


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
