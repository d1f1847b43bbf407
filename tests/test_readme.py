"""The README's examples, run against a real Orthanc so that they cannot drift.

Every ```python block runs as written, except for the stand-ins below (the
server URL, the `study_uid` and `series_uid` names), in an empty working folder
that holds only the inputs the examples read. A block with top-level `await`
runs as one coroutine, as `python -m asyncio` runs it. The `aiodicomweb`
command lines of the ```bash blocks must parse.
"""

from __future__ import annotations

import ast
import asyncio
import inspect
import os
import re
import shlex
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest

from aiodicomweb.cli import build_parser
from tests.support.corpus import delete_study, orthanc_id, upload_instances
from tests.support.dicomgen import SeriesSpec, generate_series
from tests.support.orthanc import OrthancServer

README = Path(__file__).resolve().parents[1] / "README.md"

# The study the examples work on, uploaded for each test: not the shared corpus,
# since the examples store into it and delete it. "DOE^J*" finds it.
STUDY = SeriesSpec(study=4716, series=1, instances=3, rows=16, columns=16,
                   patient_name="DOE^JANE", patient_id="DOE-JANE")  # fmt: skip
# What "incoming/" holds for the examples to store: a second series of that study.
INCOMING = replace(STUDY, series=2, instances=2)


@dataclass(frozen=True)
class Block:
    """One fenced code block of the README."""

    language: str
    heading: str
    line: int  # of the block's first line of code
    code: str

    @property
    def name(self) -> str:
        return f"README.md line {self.line} ({self.heading!r})"


def readme_blocks(language: str) -> list[Block]:
    """The README's ```language blocks, in order, each under its nearest heading."""
    blocks: list[Block] = []
    heading, fence, start, body = "", None, 0, []
    for number, line in enumerate(README.read_text().splitlines(), 1):
        if fence is None and line.startswith("#"):
            heading = line.lstrip("#").strip()
        elif fence is None and line.startswith("```"):
            fence, start, body = line[3:].strip(), number + 1, []
        elif fence is not None and line.startswith("```"):
            if fence == language:
                blocks.append(Block(language, heading, start, "\n".join(body) + "\n"))
            fence = None
        elif fence is not None:
            body.append(line)
    return blocks


# Placeholder text of the examples -> what the test runs instead. Credentials stay:
# the test Orthanc ignores those it does not ask for.
STAND_INS: dict[str, Callable[[OrthancServer], str]] = {
    "https://pacs.example.org/dicom-web": lambda server: server.dicomweb_url,
}
# Names the examples leave to the reader.
NAMES = {"study_uid": STUDY.study_uid, "series_uid": STUDY.series_uid}


def prepare(block: Block, orthanc: OrthancServer) -> Any:
    """The block's code with its stand-ins, compiled so that tracebacks show README lines."""
    code = block.code
    for placeholder, stand_in in STAND_INS.items():
        code = code.replace(placeholder, stand_in(orthanc))
    if "example.org" in code:
        pytest.fail(f"{block.name}: a placeholder URL with no stand-in in STAND_INS")
    padded = "\n" * (block.line - 1) + code
    try:
        return compile(padded, str(README), "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    except SyntaxError as error:
        pytest.fail(f"{block.name} does not compile: {error}")


def run(block: Block, orthanc: OrthancServer) -> dict[str, Any]:
    """Run the block; return the names it left behind."""
    namespace: dict[str, Any] = {"__name__": "readme", **NAMES}
    result = eval(prepare(block, orthanc), namespace)  # a coroutine when the block awaits
    if inspect.iscoroutine(result):
        asyncio.run(result)
    return namespace


def series_folder(folder: Path, spec: SeriesSpec) -> None:
    """`folder` holds the series as numbered DICOM files."""
    assert sorted(os.listdir(folder)) == [f"file{n:06d}.dcm" for n in range(spec.instances)]
    assert all(path.read_bytes()[128:132] == b"DICM" for path in folder.iterdir())


def check_async(names: dict[str, Any], orthanc: OrthancServer) -> None:
    found = {study["0020000D"]["Value"][0] for study in names["studies"]}
    assert STUDY.study_uid in found  # the search for "DOE^J*"
    series_folder(Path("out/series"), STUDY)
    assert os.listdir("out/study") == [STUDY.series_uid]
    series_folder(Path("out/study", STUDY.series_uid), STUDY)
    assert names["data"]  # the last part streamed
    assert names["stored"].ok
    assert len(names["stored"].stored) == INCOMING.instances


def check_sync(names: dict[str, Any], orthanc: OrthancServer) -> None:
    assert os.listdir("out/study") == [STUDY.series_uid]
    series_folder(Path("out/study", STUDY.series_uid), STUDY)
    assert names["data"]


def check_legacy(names: dict[str, Any], orthanc: OrthancServer) -> None:
    series_folder(Path("archive", STUDY.study_uid, STUDY.series_uid), STUDY)
    assert orthanc_id(orthanc, STUDY.study_uid, "Study") is None  # deleteStudy


def check_compat(names: dict[str, Any], orthanc: OrthancServer) -> None:
    found = {study["0020000D"]["Value"][0] for study in names["studies"]}
    assert STUDY.study_uid in found  # the search for "DOE^J*"
    expected = sorted(i.sop_instance_uid for i in generate_series(STUDY))
    assert sorted(str(ds.SOPInstanceUID) for ds in names["instances"]) == expected


def check_batch(names: dict[str, Any], orthanc: OrthancServer) -> None:
    assert names["result"].ok and names["result"].downloaded == 1
    series_folder(Path("cohort", STUDY.study_uid, STUDY.series_uid), STUDY)
    assert "downloaded" in Path("report.csv").read_text()


# What each example implies, by the heading it sits under.
CHECKS: dict[str, Callable[[dict[str, Any], OrthancServer], None]] = {
    "Async": check_async,
    "Sync": check_sync,
    "Legacy adapter": check_legacy,
    "Coming from dicomweb-client": check_compat,
    "Batch downloads": check_batch,
}


def block_id(block: Block) -> str:
    return re.sub(r"\W+", "-", block.heading.lower()).strip("-")


@pytest.fixture
def workdir(orthanc: OrthancServer, tmp_path: Path, monkeypatch) -> Iterator[Path]:
    """An empty working folder with the examples' inputs; the study on the server."""
    upload_instances(orthanc, generate_series(STUDY))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "incoming").mkdir()
    for n, instance in enumerate(generate_series(INCOMING)):
        (tmp_path / "incoming" / f"{n}.dcm").write_bytes(instance.data)
    (tmp_path / "archive").mkdir()  # the legacy adapter's target root must exist
    (tmp_path / "cohort.csv").write_text(f"StudyInstanceUID\n{STUDY.study_uid}\n")  # batch
    yield tmp_path
    delete_study(orthanc, STUDY.study_uid)


@pytest.mark.parametrize("block", readme_blocks("python"), ids=block_id)
def test_readme_python_example_runs(block: Block, orthanc: OrthancServer, workdir: Path):
    check = CHECKS.get(block.heading)
    if check is None:
        pytest.fail(f"{block.name}: no check for this example; add one to CHECKS")
    check(run(block, orthanc), orthanc)


def test_readme_stand_ins_and_checks_are_all_used():
    code = "".join(block.code for block in readme_blocks("python"))
    assert [text for text in STAND_INS if text not in code] == []
    assert [name for name in NAMES if not re.search(rf"\b{name}\b", code)] == []
    assert set(CHECKS) == {block.heading for block in readme_blocks("python")}


def command_lines() -> list[pytest.ParameterSet]:
    """Each `aiodicomweb ...` line of the README's shell blocks."""
    return [
        pytest.param(block, line, id=shlex.split(line, comments=True)[1])
        for block in readme_blocks("bash")
        for line in block.code.splitlines()
        if line.startswith("aiodicomweb ")
    ]


@pytest.mark.parametrize(("block", "line"), command_lines())
def test_readme_command_line_parses(block: Block, line: str):
    argv = shlex.split(line, comments=True)[1:]
    try:
        build_parser().parse_args(argv)
    except SystemExit:
        pytest.fail(f"{block.name}: {line!r} does not parse")
