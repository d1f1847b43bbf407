"""Tests of the sans-IO multipart/related parser and the STOW-RS encoder.

Bodies are bytes written by hand or generated; every one is fed whole, at every
two-way split and one byte at a time, because the delimiter may arrive split
across network chunks anywhere.
"""

from __future__ import annotations

import array
import itertools
import re
import urllib.request
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from requests_toolbelt.multipart.decoder import MultipartDecoder

from aiodicomweb._exceptions import DicomWebError, DicomWebUsageError, MultipartError
from aiodicomweb._media import ContentType, parse_content_type
from aiodicomweb._multipart import (
    MultipartEncoder,
    MultipartParser,
    PartData,
    PartEnded,
    PartStarted,
    encode_multipart,
    multipart_boundary,
    new_boundary,
)
from tests.support.corpus import Corpus
from tests.support.dicomgen import TEST_CORPUS
from tests.support.orthanc import OrthancServer

if TYPE_CHECKING:
    from _pytest.mark.structures import ParameterSet

Headers = tuple[tuple[str, str], ...]
Part = tuple[Headers, bytes]


RFC2046_BOUNDARY = re.compile(r"[0-9A-Za-z'()+_,\-./:=? ]{0,69}[0-9A-Za-z'()+_,\-./:=?]")
DICOM = (("Content-Type", "application/dicom"),)


# --------------------------------------------------------------------------- helpers


def parse(
    chunks: Iterable[bytes | bytearray | memoryview], boundary: bytes | str = b"B", **limits: int
) -> list[Part]:
    """Feed chunks, close, and return the parts as (headers, body)."""
    parser = MultipartParser(boundary, **limits)
    parts: list[Part] = []
    body = bytearray()
    for chunk in chunks:
        for event in parser.feed(chunk):
            if isinstance(event, PartStarted):
                parts.append((event.headers, b""))
            elif isinstance(event, PartData):
                assert len(event.data) > 0, "empty PartData event"
                body += event.data
            else:
                assert isinstance(event, PartEnded)
                parts[-1] = (parts[-1][0], bytes(body))
                body.clear()
    assert parser.close() == []
    assert parser.complete
    assert parser.parts_completed == len(parts)
    return parts


def chunkings(body: bytes) -> Iterator[list[bytes]]:
    """The whole body, every two-way split, and one byte at a time."""
    yield [body]
    for cut in range(1, len(body)):
        yield [body[:cut], body[cut:]]
    yield [body[i : i + 1] for i in range(len(body))]


def split_at(body: bytes, cuts: Sequence[int]) -> list[bytes]:
    edges = [0, *sorted(set(cuts)), len(body)]
    return [body[a:b] for a, b in itertools.pairwise(edges) if b > a]


def failure(
    body: bytes, chunks: Iterable[bytes], boundary: bytes, **limits: int
) -> MultipartError:
    parser = MultipartParser(boundary, **limits)
    with pytest.raises(MultipartError) as info:
        for chunk in chunks:
            parser.feed(chunk)
        parser.close()
    return info.value


# --------------------------------------------------------------------------- Content-Type


@pytest.mark.parametrize(
    ("header", "media_type", "params"),
    [
        pytest.param(
            'multipart/related; type="application/dicom"; boundary=abc123',
            "multipart/related",
            {"type": "application/dicom", "boundary": "abc123"},
            id="quoted-type-unquoted-boundary",
        ),
        pytest.param(
            'multipart/related; type="application/dicom"; boundary="a b:c"',
            "multipart/related",
            {"type": "application/dicom", "boundary": "a b:c"},
            id="quoted-boundary-with-space",
        ),
        pytest.param(
            r'multipart/related; boundary="q\"uo\\te"',
            "multipart/related",
            {"boundary": 'q"uo\\te'},
            id="backslash-escapes-in-quotes",
        ),
        pytest.param(
            "Multipart/Related; BOUNDARY=MixedCase; Type=application/dicom",
            "multipart/related",
            {"boundary": "MixedCase", "type": "application/dicom"},
            id="names-lowered-values-kept",
        ),
        pytest.param(
            'multipart/related; type="application/dicom"; transfer-syntax=*',
            "multipart/related",
            {"type": "application/dicom", "transfer-syntax": "*"},
            id="transfer-syntax-outside-type",
        ),
        pytest.param(
            'multipart/related; start="<root@x>"; start-info="-o ps"; boundary=b',
            "multipart/related",
            {"start": "<root@x>", "start-info": "-o ps", "boundary": "b"},
            id="start",
        ),
        pytest.param(
            "application/dicom+json; charset=utf-8",
            "application/dicom+json",
            {"charset": "utf-8"},
            id="charset",
        ),
        pytest.param(
            '  multipart/related ;type = "application/dicom" ;  boundary =  x ; ',
            "multipart/related",
            {"type": "application/dicom", "boundary": "x"},
            id="whitespace-and-trailing-semicolon",
        ),
        pytest.param(
            "multipart/related;;boundary=----=_Part_0_1.2",
            "multipart/related",
            {"boundary": "----=_Part_0_1.2"},
            id="empty-param-and-loose-unquoted-value",
        ),
        pytest.param("application/dicom", "application/dicom", {}, id="no-params"),
    ],
)
def test_parse_content_type_reads_media_type_and_params(
    header: str, media_type: str, params: dict[str, str]
) -> None:
    parsed = parse_content_type(header)
    assert parsed.media_type == media_type
    assert dict(parsed.params) == params


def test_content_type_param_lookup_is_case_insensitive() -> None:
    parsed = parse_content_type('multipart/related; Type="application/dicom"; Boundary="XyZ"')
    assert parsed.param("TYPE") == "application/dicom"
    assert parsed.param("boundary") == parsed.boundary == "XyZ"
    assert parsed.param("start") is None


@pytest.mark.parametrize(
    ("header", "offset"),
    [
        pytest.param("", 0, id="empty"),
        pytest.param("multipart", 9, id="no-slash"),
        pytest.param("multipart/", 10, id="no-subtype"),
        pytest.param("multipart/related boundary=x", 18, id="no-semicolon"),
        pytest.param("multipart/related; boundary", 27, id="no-equals"),
        pytest.param("multipart/related; boundary=", 28, id="no-value"),
        pytest.param('multipart/related; boundary="abc', 28, id="unterminated-quote"),
        pytest.param('multipart/related; type="a"x', 27, id="junk-after-quote"),
        pytest.param("multipart/related; =x", 19, id="no-param-name"),
        pytest.param("multipart/related; boundary=a; Boundary=b", 31, id="duplicate"),
    ],
)
def test_parse_content_type_rejects_malformed_headers_with_position(
    header: str, offset: int
) -> None:
    with pytest.raises(MultipartError) as info:
        parse_content_type(header)
    assert info.value.offset == offset


@pytest.mark.parametrize(
    ("header", "message"),
    [
        pytest.param("application/dicom", "expected a multipart", id="not-multipart"),
        pytest.param('multipart/related; type="application/dicom"', "no boundary", id="missing"),
        pytest.param('multipart/related; boundary=""', "empty", id="empty"),
        pytest.param(f"multipart/related; boundary={'b' * 71}", "1 to 70", id="71-chars"),
        pytest.param('multipart/related; boundary="a\x01b"', "printable", id="control-char"),
    ],
)
def test_multipart_boundary_rejects_bad_boundaries(header: str, message: str) -> None:
    with pytest.raises(MultipartError, match=message) as info:
        multipart_boundary(parse_content_type(header))
    assert info.value.offset == 0


@pytest.mark.parametrize("boundary", ["b", "b" * 70, "a b", "----=_Part_0_1.2"])
def test_multipart_boundary_accepts_1_to_70_characters(boundary: str) -> None:
    parsed = ContentType("multipart/related", {"boundary": boundary})
    assert multipart_boundary(parsed) == boundary.encode()


# --------------------------------------------------------------------------- golden bodies

ORTHANC_BODY = (
    b"--B\r\n"
    b"Content-Type: application/dicom\r\n"
    b"Content-Length: 13\r\n"
    b"\r\n"
    b"DICM\x00\r\n--B\r\n\x01"  # counted, so a delimiter inside is harmless
    b"\r\n--B\r\n"
    b"Content-Type: application/dicom\r\n"
    b"Content-Length: 0\r\n"
    b"\r\n"
    b"\r\n--B\r\n"
    b"Content-Type: application/dicom\r\n"
    b"Content-Length: 3\r\n"
    b"\r\n"
    b"xyz"
    b"\r\n--B--\r\n"
)
ORTHANC_PARTS = [
    ((*DICOM, ("Content-Length", "13")), b"DICM\x00\r\n--B\r\n\x01"),
    ((*DICOM, ("Content-Length", "0")), b""),
    ((*DICOM, ("Content-Length", "3")), b"xyz"),
]

DCM4CHEE_BODY = (
    b"This is the preamble. --BOUNDARY is not at a line start.\r\n"
    b"--BOUNDARY \t \r\n"
    b"Content-Type: application/dicom;transfer-syntax=1.2.840.10008.1.2.1\r\n"
    b"\r\n"
    b"first\r\n\r\nbody"
    b"\r\n--BOUNDARY\r\n"
    b"content-type:application/dicom\r\n"
    b"X-Folded: one\r\n"
    b"  two\r\n"
    b"\r\n"
    b"\r\n--BOUNDARY\r\n"
    b"\r\n"
    b"part without headers"
    b"\r\n--BOUNDARY--  \r\n"
    b"This is the epilogue.\r\n--BOUNDARY\r\nignored\r\n"
)
DCM4CHEE_PARTS = [
    (
        (("Content-Type", "application/dicom;transfer-syntax=1.2.840.10008.1.2.1"),),
        b"first\r\n\r\nbody",
    ),
    ((("content-type", "application/dicom"), ("X-Folded", "one two")), b""),
    ((), b"part without headers"),
]

NEAR_MISS_BODY = b"".join(
    [
        b"--BOUNDARY\r\nContent-Type: application/dicom\r\n\r\n",
        b"--BOUNDARY without a CRLF before it;",
        b"\r\n--BOUNDAR\r\n--BOUNDAR",  # one character short
        b"\r\n--BOUNDARx\r\n--boundary",  # last character differs, wrong case
        b"\r\n-BOUNDARY\n--BOUNDARY\r--BOUNDARY\r\r\n-\r\n--",  # broken CRLF or dashes
        b"\r",  # a CR right before the real delimiter
        b"\r\n--BOUNDARY--\r\n",
    ]
)
NEAR_MISS_PARTS = [
    (
        DICOM,
        b"--BOUNDARY without a CRLF before it;\r\n--BOUNDAR\r\n--BOUNDAR\r\n--BOUNDARx"
        b"\r\n--boundary\r\n-BOUNDARY\n--BOUNDARY\r--BOUNDARY\r\r\n-\r\n--\r",
    )
]


@pytest.mark.parametrize(
    ("body", "boundary", "expected"),
    [
        pytest.param(ORTHANC_BODY, b"B", ORTHANC_PARTS, id="orthanc-content-length"),
        pytest.param(DCM4CHEE_BODY, b"BOUNDARY", DCM4CHEE_PARTS, id="dcm4chee-scanned"),
        pytest.param(NEAR_MISS_BODY, b"BOUNDARY", NEAR_MISS_PARTS, id="near-misses"),
        pytest.param(
            b"--B\r\nContent-Type: a\r\n\r\n\r\n--B--",
            b"B",
            [((("Content-Type", "a"),), b"")],
            id="empty-scanned-part-no-final-crlf",
        ),
        pytest.param(b"--B--\r\n", b"B", [], id="no-parts"),
    ],
)
def test_golden_body_parses_identically_at_every_split(
    body: bytes, boundary: bytes, expected: list[Part]
) -> None:
    for chunks in chunkings(body):
        assert parse(chunks, boundary) == expected, [len(c) for c in chunks]


def test_boundary_may_be_given_as_str() -> None:
    assert parse([ORTHANC_BODY], "B") == ORTHANC_PARTS


@pytest.mark.parametrize(
    "kind",
    [
        pytest.param(bytes, id="bytes"),
        pytest.param(bytearray, id="bytearray"),
        pytest.param(memoryview, id="memoryview"),
        pytest.param(lambda b: array.array("B", b), id="array"),
    ],
)
def test_any_byte_buffer_can_be_fed(kind: Callable[[bytes], bytes]) -> None:
    chunks = [kind(part) for part in split_at(DCM4CHEE_BODY, range(0, len(DCM4CHEE_BODY), 7))]
    assert parse(chunks, b"BOUNDARY") == DCM4CHEE_PARTS


def test_non_byte_memoryview_is_read_as_bytes() -> None:
    body = b"--B\r\n\r\nabcd\r\n--B--"  # 18 bytes: nine 16-bit items
    assert parse([memoryview(array.array("H", body))]) == [((), b"abcd")]


def test_part_started_exposes_headers_and_content_length() -> None:
    events = MultipartParser(b"B").feed(ORTHANC_BODY)
    started = [e for e in events if isinstance(e, PartStarted)]
    assert [s.content_length for s in started] == [13, 0, 3]
    assert started[0].header("CONTENT-TYPE") == "application/dicom"
    assert started[0].header("content-location") is None


def test_latin1_header_bytes_are_decoded_as_latin1() -> None:
    body = b"--B\r\nContent-Description: caf\xe9\r\n\r\nx\r\n--B--"
    assert parse([body]) == [((("Content-Description", "caf\xe9"),), b"x")]


def test_epilogue_and_bytes_after_completion_are_ignored() -> None:
    parser = MultipartParser(b"B")
    body = b"--B\r\n\r\nx\r\n--B--garbage \x00\r\n--B\r\n" + b"epilogue" * 1000
    parser.feed(body)
    assert parser.complete
    assert parser.feed(b"more garbage" * 1000) == []
    assert parser.offset == len(body) + 12000
    assert parser.close() == []


def test_offset_counts_every_byte_fed() -> None:
    parser = MultipartParser(b"BOUNDARY")
    fed = 0
    for chunk in split_at(DCM4CHEE_BODY, [5, 60, 61, 100]):
        parser.feed(chunk)
        fed += len(chunk)
        assert parser.offset == fed
    assert parser.complete


# --------------------------------------------------------------------------- zero copy


@pytest.mark.parametrize("content_length", [True, False], ids=["counted", "scanned"])
def test_part_data_is_a_view_of_the_fed_chunk(content_length: bool) -> None:
    payload = bytes(range(256)) * 64
    header = b"Content-Length: %d\r\n" % len(payload) if content_length else b""
    head = b"--B\r\n" + header + b"\r\n"
    chunk = head + payload + b"\r\n--B--\r\n"
    parser = MultipartParser(b"B")
    [data] = [e.data for e in parser.feed(chunk) if isinstance(e, PartData)]
    assert data.obj is chunk
    assert data == payload


def test_part_data_of_a_memoryview_chunk_views_the_underlying_buffer() -> None:
    body = b"xx--B\r\n\r\n" + b"payload" * 100 + b"\r\n--B--"
    view = memoryview(body)[2:]
    [data] = [e.data for e in MultipartParser(b"B").feed(view) if isinstance(e, PartData)]
    assert data.obj is body


def test_whole_chunk_inside_a_body_is_emitted_as_one_view() -> None:
    parser = MultipartParser(b"B")
    parser.feed(b"--B\r\nContent-Length: 100000\r\n\r\n")
    chunk = b"\x00" * 65536
    [event] = parser.feed(chunk)
    assert isinstance(event, PartData)
    assert event.data.obj is chunk
    assert len(event.data) == 65536


def test_scanned_part_holds_back_only_a_possible_delimiter_prefix() -> None:
    boundary = b"a2f1c3"
    parser = MultipartParser(boundary)
    parser.feed(b"--a2f1c3\r\n\r\n")
    first = b"x" * 100 + b"\r\n--a2f"  # may be the start of the delimiter
    second = b"1cX" + b"y" * 100  # it was not
    out1 = [e.data for e in parser.feed(first) if isinstance(e, PartData)]
    out2 = [e.data for e in parser.feed(second) if isinstance(e, PartData)]
    assert [bytes(d) for d in out1] == [b"x" * 100]
    assert out1[0].obj is first
    # The held-back tail comes out as a small copy, the rest as a view of the chunk.
    assert [bytes(d) for d in out2] == [b"\r\n--a2f", second]
    assert out2[1].obj is second


@pytest.mark.parametrize(
    "chunk",
    [
        pytest.param(b"ends with CR then X\rX", id="cr-x"),
        pytest.param(b"ends with CRLF then X\r\nX", id="crlf-x"),
        pytest.param(b"ends with CRLF-X\r\n-X", id="crlf-dash-x"),
        pytest.param(b"ends with CRLF--b\r\n--b", id="wrong-case"),
    ],
)
def test_scanned_chunk_whose_tail_cannot_start_a_delimiter_is_emitted_whole(chunk: bytes) -> None:
    parser = MultipartParser(b"B")
    parser.feed(b"--B\r\n\r\n")
    [event] = parser.feed(chunk)
    assert isinstance(event, PartData)
    assert event.data.obj is chunk
    assert len(event.data) == len(chunk)


# --------------------------------------------------------------------------- malformed bodies

GARBAGE = "expected CRLF or '--'"
UNDELIMITED = "not followed by a boundary"
BAD_LENGTH = "invalid part Content-Length"
BAD_HEADER = "malformed part header"
CUT_IN_PART = "inside part {} before its closing delimiter"


def bad(name: str, body: bytes, offset: int, message: str, **limits: int) -> ParameterSet:
    return pytest.param(body, offset, message, limits, id=name)


MALFORMED = [
    bad("garbage-after-delimiter", b"--B\r\n\r\nabc\r\n--Bx\r\n", 15, GARBAGE),
    bad("garbage-after-first-boundary", b"--Bjunk\r\n\r\n", 3, GARBAGE),
    bad("cr-without-lf-after-padding", b"--B \t\rX", 6, GARBAGE),
    bad("single-dash-after-boundary", b"--B\r\n\r\nx\r\n--B-x", 14, GARBAGE),
    bad("length-too-short", b"--B\r\nContent-Length: 3\r\n\r\nabcd\r\n--B--", 29, UNDELIMITED),
    bad("length-too-long", b"--B\r\nContent-Length: 3\r\n\r\nab\r\n--B--", 29, UNDELIMITED),
    bad(
        "other-boundary-after-length",
        b"--B\r\nContent-Length: 3\r\n\r\nabc\r\n--X",
        33,
        UNDELIMITED,
    ),
    bad("negative-length", b"--B\r\nContent-Length: -1\r\n\r\nx\r\n--B--", 5, BAD_LENGTH),
    bad("non-numeric-length", b"--B\r\nA: b\r\nContent-Length: 12a\r\n\r\nx", 11, BAD_LENGTH),
    bad(
        "conflicting-lengths",
        b"--B\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
        24,
        "conflicting",
    ),
    bad(
        "header-block-too-big",
        b"--B\r\nX-Long: " + b"v" * 40 + b"\r\n\r\nx",
        35,
        "exceed 32 bytes",
        max_header_size=32,
    ),
    bad(
        "padding-too-long",
        b"--B" + b" " * 40 + b"\r\n\r\n",
        35,
        "exceed 32 bytes",
        max_header_size=32,
    ),
    bad(
        "too-many-headers",
        b"--B\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n",
        17,
        "more than 2 headers",
        max_headers=2,
    ),
    bad("header-without-colon", b"--B\r\nA: 1\r\nNoColonHere\r\n\r\nx", 11, BAD_HEADER),
    bad("header-name-with-space", b"--B\r\nBad Name: v\r\n\r\n", 5, BAD_HEADER),
    bad("fold-without-header", b"--B\r\n continued: v\r\n\r\n", 5, BAD_HEADER),
    bad("lone-cr-in-header", b"--B\r\nA: b\rc\r\n\r\n", 5, BAD_HEADER),
    bad(
        "preamble-too-big",
        b"x" * 11 + b"\r\n--B\r\n\r\n",
        10,
        "first 10 bytes",
        max_preamble_size=10,
    ),
    bad("no-delimiter-at-all", b"y" * 100, 10, "first 10 bytes", max_preamble_size=10),
    bad(
        "declared-part-too-big",
        b"--B\r\nContent-Length: 4\r\n\r\nabcd\r\n--B--",
        5,
        "max_part_size=3",
        max_part_size=3,
    ),
    bad(
        "scanned-part-too-big",
        b"--B\r\n\r\nabc\r\n--B\r\n\r\nabcd\r\n--B--",
        22,
        "part 2 exceeds max_part_size=3",
        max_part_size=3,
    ),
    bad("empty-body", b"", 0, "before the first boundary delimiter"),
    bad("cut-in-preamble", b"preamble only\r\n--", 17, "before the first boundary delimiter"),
    bad("cut-in-headers", b"--B\r\nContent-Ty", 15, "inside the headers of part 1"),
    bad(
        "cut-in-counted-body",
        b"--B\r\nContent-Length: 5\r\n\r\nab",
        28,
        "part 1 after 2 of its 5 bytes",
    ),
    bad("cut-in-delimiter", b"--B\r\nContent-Length: 2\r\n\r\nab\r\n-", 31, CUT_IN_PART.format(1)),
    bad(
        "cut-in-scanned-body", b"--B\r\n\r\nabc\r\n--B\r\n\r\ndef\r\n-", 25, CUT_IN_PART.format(2)
    ),
    bad(
        "close-delimiter-missing",
        b"--B\r\n\r\nabc\r\n--B",
        15,
        "before part 2 or the closing '--'",
    ),
    bad("cut-inside-close-dashes", b"--B\r\n\r\nabc\r\n--B-", 16, "headers of part 2"),
]


@pytest.mark.parametrize(("body", "offset", "message", "limits"), MALFORMED)
def test_malformed_body_raises_multipart_error_at_exact_offset(
    body: bytes, offset: int, message: str, limits: dict[str, int]
) -> None:
    splits = [[body], [body[i : i + 1] for i in range(len(body))]]
    splits += [[body[:cut], body[cut:]] for cut in range(1, len(body))]
    for chunks in splits:
        error = failure(body, chunks, b"B", **limits)
        assert error.offset == offset, (str(error), [len(c) for c in chunks])
        assert message in error.message
        assert f"(at byte {offset})" in str(error)


def test_multipart_error_is_a_connection_error_and_a_dicomweb_error() -> None:
    error = failure(b"", [], b"B")
    assert isinstance(error, ConnectionError)
    assert isinstance(error, DicomWebError)


def test_delimiter_followed_by_garbage_inside_a_scanned_body_is_an_error() -> None:
    # RFC 2046 5.1.1: the boundary need only appear in its entirety after CRLF;
    # what follows must be padding and CRLF, so "\r\n--B" + "x" cannot be body.
    error = failure(b"", [b"--B\r\n\r\nabc\r\n--Bx"], b"B")
    assert error.offset == 15


def test_preamble_of_exactly_the_limit_is_accepted() -> None:
    body = b"p" * 10 + b"\r\n--B\r\n\r\nx\r\n--B--"
    for chunks in chunkings(body):
        assert parse(chunks, max_preamble_size=10) == [((), b"x")]


def test_header_block_of_exactly_the_limit_is_accepted() -> None:
    body = b"--B\r\nX: " + b"v" * 23 + b"\r\n\r\nbody\r\n--B--"  # 32 bytes after "--B"
    for chunks in chunkings(body):
        assert parse(chunks, max_header_size=32) == [((("X", "v" * 23),), b"body")]


def test_part_of_exactly_max_part_size_is_accepted() -> None:
    body = b"--B\r\n\r\nabc\r\n--B\r\nContent-Length: 3\r\n\r\nxyz\r\n--B--"
    for chunks in chunkings(body):
        assert parse(chunks, max_part_size=3) == [
            ((), b"abc"),
            ((("Content-Length", "3"),), b"xyz"),
        ]


def test_parser_stays_failed_after_an_error() -> None:
    parser = MultipartParser(b"B")
    with pytest.raises(MultipartError):
        parser.feed(b"--Bjunk")
    with pytest.raises(MultipartError, match="failed earlier") as info:
        parser.feed(b"--B\r\n")
    assert info.value.offset == 3
    with pytest.raises(MultipartError, match="failed earlier"):
        parser.close()


def test_feeding_after_close_is_an_error() -> None:
    parser = MultipartParser(b"B")
    parser.feed(b"--B--")
    assert parser.close() == []
    assert parser.close() == []
    with pytest.raises(MultipartError, match="after close"):
        parser.feed(b"x")


def test_truncated_body_keeps_failing_after_close() -> None:
    parser = MultipartParser(b"B")
    parser.feed(b"--B\r\n\r\nab")
    with pytest.raises(MultipartError, match="part 1 before its closing delimiter"):
        parser.close()
    with pytest.raises(MultipartError):
        parser.feed(b"\r\n--B--")


@pytest.mark.parametrize(
    ("boundary", "limits"),
    [
        pytest.param(b"", {}, id="empty-boundary"),
        pytest.param("b" * 71, {}, id="71-char-boundary"),
        pytest.param("caf\xe9", {}, id="non-ascii-boundary"),
        pytest.param(b"a\r\nb", {}, id="crlf-in-boundary"),
        pytest.param(b"B", {"max_header_size": 0}, id="zero-header-size"),
        pytest.param(b"B", {"max_headers": -1}, id="negative-max-headers"),
        pytest.param(b"B", {"max_part_size": -1}, id="negative-part-size"),
    ],
)
def test_parser_rejects_bad_arguments(boundary: bytes | str, limits: dict[str, int]) -> None:
    with pytest.raises(DicomWebUsageError):
        MultipartParser(boundary, **limits)


# --------------------------------------------------------------------------- generated bodies

BOUNDARY_CHARS = "0123456789ABCXYZabcxyz'()+_,-./:=? "


@st.composite
def boundaries(draw: st.DrawFn) -> bytes:
    text = draw(st.text(BOUNDARY_CHARS, min_size=1, max_size=70).map(str.strip))
    return (text or "b").encode()


def fragments(boundary: bytes) -> st.SearchStrategy[bytes]:
    """Body pieces that look like parts of a delimiter."""
    pieces = [
        b"\r", b"\n", b"\r\n", b"-", b"--", b"\r\n--", b"\r\n\r\n", boundary,
        b"--" + boundary, b"\r\n--" + boundary[:-1], b"\r\n-" + boundary,
        b"\r\n--" + boundary[:-1] + b"\x00", b"\n--" + boundary, b"\r--" + boundary,
    ]  # fmt: skip
    return st.one_of(st.binary(max_size=48), st.sampled_from(pieces))


def without_delimiter(data: bytes, delimiter: bytes) -> bytes:
    while delimiter in data:
        data = data.replace(delimiter, b"\r\n-")
    return data


@st.composite
def multipart_bodies(draw: st.DrawFn, *, reference: bool) -> tuple[bytes, bytes, list[Part]]:
    """A boundary, a body and its parts. ``reference``: keep it toolbelt-friendly."""
    boundary = draw(boundaries())
    delimiter = b"\r\n--" + boundary
    noise = st.lists(fragments(boundary), max_size=8).map(b"".join)
    preamble = b"" if reference else draw(noise)
    preamble = without_delimiter(b"\r\n" + preamble, delimiter)[2:]
    # toolbelt splits the whole stream on CRLF--boundary, so for it no body may
    # start with --boundary right after the CRLF that ends the part headers.
    fenced = 2 if reference else 0
    pieces = [preamble, b"\r\n" if preamble else b""]
    parts: list[Part] = []
    for _ in range(draw(st.integers(0 if not reference else 1, 4))):
        body = without_delimiter(b"\r\n"[:fenced] + draw(noise), delimiter)[fenced:]
        headers: list[tuple[str, str]] = []
        if draw(st.booleans()):
            headers.append(("Content-Type", draw(st.sampled_from(["application/dicom", "x/y"]))))
        if draw(st.booleans()):
            headers.append(("Content-Length", str(len(body))))
        if draw(st.booleans()):
            headers.append(("Content-Location", "/studies/1.2.3"))
        padding = draw(st.sampled_from([b"", b" ", b"\t \t"]))
        head = b"".join(b"%s: %s\r\n" % (n.encode(), v.encode()) for n, v in headers)
        pieces += [b"--", boundary, padding, b"\r\n", head, b"\r\n", body, b"\r\n"]
        parts.append((tuple(headers), body))
    epilogue = without_delimiter(b"\r\n" + draw(noise), delimiter)[2:]
    pieces += [b"--", boundary, b"--\r\n", epilogue]
    return boundary, b"".join(pieces), parts


def drawn_chunks(data: st.DataObject, body: bytes) -> list[bytes]:
    cuts = data.draw(st.lists(st.integers(1, max(1, len(body) - 1)), max_size=12))
    return split_at(body, cuts)


def pieces(data: bytes, size: int) -> Iterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


def toolbelt_parts(body: bytes, boundary: bytes) -> list[Part]:
    content_type = f'multipart/related; type="application/dicom"; boundary="{boundary.decode()}"'
    decoded = MultipartDecoder(body, content_type)
    return [
        (tuple((k.decode(), v.decode()) for k, v in part.headers.items()), part.content)
        for part in decoded.parts
    ]


def lowered(parts: list[Part]) -> list[tuple[list[tuple[str, str]], bytes]]:
    return [(sorted((k.lower(), v) for k, v in headers), body) for headers, body in parts]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(generated=multipart_bodies(reference=False), data=st.data())
def test_generated_bodies_parse_to_their_parts_at_any_chunking(
    generated: tuple[bytes, bytes, list[Part]], data: st.DataObject
) -> None:
    boundary, body, parts = generated
    assert parse(drawn_chunks(data, body), boundary) == parts


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(generated=multipart_bodies(reference=True), data=st.data())
def test_generated_bodies_match_the_requests_toolbelt_decoder(
    generated: tuple[bytes, bytes, list[Part]], data: st.DataObject
) -> None:
    # requests_toolbelt splits the whole body on CRLF--boundary: it needs no
    # preamble (it would take it for a part) and bodies free of the delimiter.
    boundary, body, parts = generated
    ours = parse(drawn_chunks(data, body), boundary)
    assert ours == parts
    assert lowered(ours) == lowered(toolbelt_parts(body, boundary))


@settings(max_examples=100, deadline=None)
@given(payloads=st.lists(st.binary(max_size=64), max_size=4), data=st.data())
def test_counted_bodies_may_contain_the_delimiter(
    payloads: list[bytes], data: st.DataObject
) -> None:
    weird = b"\r\n--B\r\n--B--\r\n"
    bodies = [weird[: len(p) % 15] + p + weird for p in payloads]
    encoded = b"".join(
        b"%s--B\r\nContent-Length: %d\r\n\r\n%s" % (b"\r\n" if i else b"", len(b), b)
        for i, b in enumerate(bodies)
    ) + (b"\r\n--B--" if bodies else b"--B--")
    expected = [((("Content-Length", str(len(b))),), b) for b in bodies]
    assert parse(drawn_chunks(data, encoded)) == expected


def test_one_byte_at_a_time_matches_whole_body_on_a_large_body() -> None:
    body = (
        b"pre\r\n--B\r\n\r\n"
        + b"\r\n-\r\n--" * 500
        + b"\r\n--B\r\nContent-Length: 3\r\n\r\nabc\r\n--B--"
    )
    whole = parse([body])
    assert parse([body[i : i + 1] for i in range(len(body))]) == whole
    assert whole[0][1] == b"\r\n-\r\n--" * 500


# --------------------------------------------------------------------------- encoder


def test_encoder_content_type_quotes_type_and_boundary() -> None:
    encoder = MultipartEncoder(boundary="abc.def")
    assert (
        encoder.content_type == 'multipart/related; type="application/dicom"; boundary="abc.def"'
    )
    parsed = parse_content_type(encoder.content_type)
    assert parsed.param("type") == "application/dicom"
    assert multipart_boundary(parsed) == b"abc.def"


def test_new_boundaries_are_random_and_valid() -> None:
    generated = {new_boundary() for _ in range(200)}
    assert len(generated) == 200
    assert all(RFC2046_BOUNDARY.fullmatch(b) for b in generated)
    assert MultipartEncoder().boundary != MultipartEncoder().boundary


def test_encoder_framing_bytes() -> None:
    encoder = MultipartEncoder(boundary="XX", part_type="application/dicom")
    assert encoder.part_head(first=True) == b"--XX\r\nContent-Type: application/dicom\r\n\r\n"
    assert encoder.part_head() == b"\r\n--XX\r\nContent-Type: application/dicom\r\n\r\n"
    assert encoder.part_head({"Content-Length": "5"}, first=True) == (
        b"--XX\r\nContent-Type: application/dicom\r\nContent-Length: 5\r\n\r\n"
    )
    assert encoder.part_head({"content-type": "x/y"}) == b"\r\n--XX\r\ncontent-type: x/y\r\n\r\n"
    assert encoder.close_delimiter() == b"\r\n--XX--\r\n"


@pytest.mark.parametrize(
    ("kwargs", "headers"),
    [
        pytest.param({"boundary": "bad\r\nboundary"}, None, id="crlf-boundary"),
        pytest.param({"boundary": "b" * 71}, None, id="long-boundary"),
        pytest.param({"boundary": "trailing "}, None, id="trailing-space"),
        pytest.param({"boundary": ""}, None, id="empty-boundary"),
        pytest.param({"part_type": "application/dicom\r\nX: y"}, None, id="crlf-part-type"),
        pytest.param({}, {"Bad Name": "v"}, id="bad-header-name"),
        pytest.param({}, {"X-Injected": "v\r\nEvil: 1"}, id="header-injection"),
    ],
)
def test_encoder_rejects_invalid_arguments(
    kwargs: dict[str, str], headers: dict[str, str] | None
) -> None:
    with pytest.raises(DicomWebUsageError):
        MultipartEncoder(**kwargs).part_head(headers)


def test_encoder_round_trips_through_the_parser() -> None:
    other = new_boundary()
    bodies = [
        b"DICM" + bytes(range(256)) * 10,
        b"",
        # Boundary-like content is safe: the encoder's boundary is 128 random bits
        # drawn after the content exists, so the chance that CRLF--<boundary>
        # occurs in a body is about n * 2**-128 -- nil, and content cannot be made
        # to collide on purpose because nobody knows the boundary beforehand.
        b"\r\n--" + other.encode() + b"\r\n\r\n--" + other.encode() + b"--\r\n",
    ]
    content_type, stream = encode_multipart(
        [(None, pieces(body, 3)) for body in bodies]
        + [({"Content-Length": "3", "Content-Location": "/x"}, [b"a", b"", b"bc"])]
    )
    assert other not in content_type
    encoded = b"".join(stream)
    boundary = multipart_boundary(parse_content_type(content_type))
    for chunks in (split_at(encoded, range(0, len(encoded), 5)), [encoded]):
        parts = parse(chunks, boundary)
        assert [body for _, body in parts] == [*bodies, b"abc"]
        assert all(headers[0] == ("Content-Type", "application/dicom") for headers, _ in parts)
        assert parts[-1][0][1:] == (("Content-Length", "3"), ("Content-Location", "/x"))


def test_encoder_with_no_parts_produces_only_the_close_delimiter() -> None:
    _, stream = encode_multipart([], boundary="E")
    body = b"".join(stream)
    assert body == b"--E--\r\n"
    assert parse([body], b"E") == []


def test_encode_multipart_consumes_its_inputs_lazily() -> None:
    pulled: list[str] = []

    def body(name: str) -> Iterator[bytes]:
        for index in range(3):
            pulled.append(f"{name}{index}")
            yield name.encode() * 4

    def parts() -> Iterator[tuple[None, Iterator[bytes]]]:
        for name in "ab":
            pulled.append(f"part {name}")
            yield None, body(name)

    _, stream = encode_multipart(parts(), boundary="L")
    assert pulled == []  # nothing is read before the body is iterated
    assert next(stream).startswith(b"--L\r\n")
    assert pulled == ["part a"]
    assert next(stream) == b"aaaa"
    assert pulled == ["part a", "a0"]
    next(stream)
    next(stream)
    assert pulled == ["part a", "a0", "a1", "a2"]
    assert next(stream).startswith(b"\r\n--L\r\n")
    assert pulled[-1] == "part b"
    rest = list(stream)
    assert rest[-1] == b"\r\n--L--\r\n"
    assert pulled[-1] == "b2"


# ------------------------------------------------------------ bodies captured from Orthanc


@pytest.fixture(scope="module")
def orthanc_series_body(orthanc: OrthancServer, corpus: Corpus) -> tuple[bytes, bytes]:
    """The raw WADO-RS answer for a 5-instance series, read with the standard library."""
    spec = TEST_CORPUS[1]
    url = f"{orthanc.dicomweb_url}/studies/{spec.study_uid}/series/{spec.series_uid}"
    accept = 'multipart/related; type="application/dicom"; transfer-syntax=*'
    request = urllib.request.Request(url, headers={"Accept": accept})
    with urllib.request.urlopen(request, timeout=30) as response:
        body, content_type = response.read(), response.headers["Content-Type"]
    return body, multipart_boundary(parse_content_type(content_type))


def test_orthanc_series_body_matches_the_reference_decoder_and_the_stored_bytes(
    orthanc_series_body: tuple[bytes, bytes], corpus: Corpus
) -> None:
    body, boundary = orthanc_series_body
    parts = parse([body], boundary)
    assert parts == toolbelt_parts(body, boundary)
    expected = sorted(i.data for i in corpus.series(TEST_CORPUS[1].series_uid))
    assert sorted(data for _, data in parts) == expected
    assert all(dict(headers).get("Content-Length") == str(len(data)) for headers, data in parts)


def test_orthanc_series_body_parses_identically_however_it_is_cut(
    orthanc_series_body: tuple[bytes, bytes],
) -> None:
    body, boundary = orthanc_series_body
    whole = parse([body], boundary)
    delimiters = [m.start() for m in re.finditer(re.escape(b"--" + boundary), body)]
    cuts = {c for d in delimiters for c in range(max(1, d - 100), min(len(body), d + 200))}
    for cut in sorted(cuts):
        assert parse([body[:cut], body[cut:]], boundary) == whole, cut
    assert parse(pieces(body, 1), boundary) == whole
    assert parse(pieces(body, 65536), boundary) == whole
