"""Tests of the pure URL, query and UID code in `aiodicomweb._urls`.

No I/O: values in, strings or errors out.
"""

from __future__ import annotations

import datetime
from urllib.parse import parse_qsl

import pytest

from aiodicomweb._exceptions import (
    DicomWebError,
    DicomWebUsageError,
    InvalidUIDError,
    UIDTypeError,
    UnexpectedResponseError,
)
from aiodicomweb._urls import build_query, qido_path, redact_url
from aiodicomweb._validate import is_valid_uid, server_uid, validate_uid

STUDY = "1.2.840.113619.2.55.3.604688119.969.1268071029.320"
SERIES = "1.2.840.113619.2.55.3.604688119.969.1268071029.321"
UID_64 = "1." + "2" * 62
UID_65 = "1." + "2" * 63

VALID_UIDS = [
    pytest.param("1", id="single-digit"),
    pytest.param("0", id="zero"),
    pytest.param("1.2.840.10008.1.2.1", id="transfer-syntax"),
    pytest.param(STUDY, id="study-uid"),
    pytest.param(UID_64, id="64-chars"),
    pytest.param("2.25.329800735698586629295641978511506172918", id="uuid-derived"),
]

INVALID_UIDS = [
    pytest.param("", id="empty"),
    pytest.param(UID_65, id="65-chars"),
    pytest.param("1..2", id="double-dot"),
    pytest.param("..", id="dot-dot"),
    pytest.param("1.2.", id="trailing-dot"),
    pytest.param(".1.2", id="leading-dot"),
    pytest.param("1.2/3", id="slash"),
    pytest.param("../../etc/passwd", id="path-traversal"),
    pytest.param("1.2\x003", id="nul"),
    pytest.param("1.2\n", id="trailing-newline"),
    pytest.param(" 1.2", id="leading-space"),
    pytest.param("1.2a", id="letter"),
    pytest.param("1.2\\3", id="backslash"),
    pytest.param("\u0661.\u0662", id="arabic-indic-digits"),
    pytest.param(123, id="int"),
    pytest.param(1.2, id="float"),
    pytest.param(None, id="none"),
    pytest.param(b"1.2.3", id="bytes"),
    pytest.param(["1.2"], id="list"),
]


# -- UIDs ----------------------------------------------------------------------


@pytest.mark.parametrize("uid", VALID_UIDS)
def test_valid_uids_are_accepted_and_returned_unchanged(uid: str) -> None:
    assert is_valid_uid(uid) is True
    assert validate_uid(uid) == uid
    assert server_uid(uid, "SeriesInstanceUID") == uid


@pytest.mark.parametrize("value", INVALID_UIDS)
def test_is_valid_uid_is_false_for_invalid_values_without_raising(value: object) -> None:
    assert is_valid_uid(value) is False


@pytest.mark.parametrize("value", INVALID_UIDS)
def test_validate_uid_raises_invalid_uid_error_which_is_a_value_error(value: object) -> None:
    with pytest.raises(InvalidUIDError) as caught:
        validate_uid(value, "StudyInstanceUID")
    error = caught.value
    assert isinstance(error, ValueError)
    assert isinstance(error, DicomWebUsageError)
    assert isinstance(error, DicomWebError)
    assert not isinstance(error, ConnectionError)
    assert "StudyInstanceUID" in str(error)


@pytest.mark.parametrize("value", [None, 12, 1.2, b"1.2", ["1.2"]], ids=repr)
def test_a_uid_that_is_not_a_string_is_also_a_type_error(value: object) -> None:
    with pytest.raises(
        UIDTypeError, match=f"StudyInstanceUID must be a string, not {type(value).__name__}"
    ):
        validate_uid(value, "StudyInstanceUID")
    with pytest.raises(TypeError):
        validate_uid(value)
    with pytest.raises(InvalidUIDError):
        validate_uid(value)


def test_a_string_that_is_not_a_uid_is_not_a_type_error() -> None:
    with pytest.raises(InvalidUIDError) as caught:
        validate_uid("1.2.x")
    assert not isinstance(caught.value, TypeError)


@pytest.mark.parametrize("value", INVALID_UIDS)
def test_server_uid_raises_unexpected_response_error_which_is_a_connection_error(
    value: object,
) -> None:
    with pytest.raises(UnexpectedResponseError) as caught:
        server_uid(value, "SOPInstanceUID")
    error = caught.value
    assert isinstance(error, ConnectionError)
    assert isinstance(error, DicomWebError)
    assert not isinstance(error, ValueError)
    assert "SOPInstanceUID" in str(error)


def test_server_uid_error_message_is_bounded_for_huge_hostile_values() -> None:
    with pytest.raises(UnexpectedResponseError) as caught:
        server_uid("9" * 100_000, "SeriesInstanceUID")
    assert len(str(caught.value)) < 300


def test_uid_length_limit_is_exactly_64_characters() -> None:
    assert len(UID_64) == 64
    assert len(UID_65) == 65
    assert is_valid_uid(UID_64)
    assert not is_valid_uid(UID_65)


# -- QIDO resources --------------------------------------------------------------


@pytest.mark.parametrize(
    ("level", "study", "series", "expected"),
    [
        pytest.param("studies", None, None, "/studies", id="all-studies"),
        pytest.param("series", None, None, "/series", id="all-series"),
        pytest.param("instances", None, None, "/instances", id="all-instances"),
        pytest.param("series", STUDY, None, f"/studies/{STUDY}/series", id="series-of-study"),
        pytest.param(
            "instances", STUDY, None, f"/studies/{STUDY}/instances", id="instances-of-study"
        ),
        pytest.param(
            "instances",
            STUDY,
            SERIES,
            f"/studies/{STUDY}/series/{SERIES}/instances",
            id="instances-of-series",
        ),
    ],
)
def test_qido_path_covers_every_resource_of_ps3_18(
    level: str, study: str | None, series: str | None, expected: str
) -> None:
    assert qido_path(level, study, series) == expected  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("level", "study", "series"),
    [
        pytest.param("studies", STUDY, None, id="studies-scoped-to-study"),
        pytest.param("studies", None, SERIES, id="studies-scoped-to-series"),
        pytest.param("studies", STUDY, SERIES, id="studies-scoped-to-both"),
        pytest.param("series", STUDY, SERIES, id="series-scoped-to-series"),
        pytest.param("series", None, SERIES, id="series-scoped-to-series-without-study"),
        pytest.param("instances", None, SERIES, id="instances-series-scope-without-study"),
    ],
)
def test_qido_path_refuses_invalid_scopes(
    level: str, study: str | None, series: str | None
) -> None:
    with pytest.raises(DicomWebUsageError):
        qido_path(level, study, series)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("study", "series"),
    [
        pytest.param("1..2", None, id="bad-study"),
        pytest.param(STUDY, "1.2/../3", id="bad-series"),
        pytest.param("", None, id="empty-study"),
    ],
)
def test_qido_path_validates_scope_uids(study: str, series: str | None) -> None:
    with pytest.raises(InvalidUIDError):
        qido_path("instances", study, series)


@pytest.mark.parametrize(
    "level",
    [
        pytest.param("patients", id="unknown-level"),
        pytest.param("study", id="singular-typo"),
        pytest.param("", id="empty"),
        pytest.param("studies/../admin", id="path-injection"),
    ],
)
def test_qido_path_refuses_unknown_levels(level: str) -> None:
    # A typo must be a caller error before any request, not a GET of "/study".
    with pytest.raises(DicomWebUsageError):
        qido_path(level)  # type: ignore[arg-type]


# -- QIDO query strings ---------------------------------------------------------


@pytest.mark.parametrize(
    ("match", "expected"),
    [
        pytest.param({"PatientName": "DOE^J*"}, "PatientName=DOE^J*", id="keyword"),
        pytest.param({"00100020": "ID1"}, "00100020=ID1", id="hex-tag"),
        pytest.param({"0020000e": "1.2"}, "0020000E=1.2", id="hex-tag-lowercase"),
        pytest.param({"(0010,0010)": "X"}, "00100010=X", id="parenthesised-tag"),
        pytest.param({0x00100010: "X"}, "00100010=X", id="int-tag"),
        pytest.param({0x0020000D: "1.2"}, "0020000D=1.2", id="int-tag-hex-letters"),
        pytest.param(
            {"RequestAttributesSequence.RequestedProcedureID": "P1"},
            "RequestAttributesSequence.RequestedProcedureID=P1",
            id="dotted-keywords",
        ),
        pytest.param({"(0040,0275).(0040,1001)": "P1"}, "00400275.00401001=P1", id="dotted-tags"),
        pytest.param(
            {"RequestAttributesSequence.00401001": "P1"},
            "RequestAttributesSequence.00401001=P1",
            id="dotted-mixed",
        ),
        pytest.param({"SeriesNumber": 3}, "SeriesNumber=3", id="int-value"),
    ],
)
def test_build_query_match_keys(match: dict[str | int, object], expected: str) -> None:
    assert build_query(match) == expected


def test_build_query_keeps_the_callers_order() -> None:
    query = build_query({"PatientID": "A", "Modality": "CT", "StudyDate": "20240101"})
    assert query == "PatientID=A&Modality=CT&StudyDate=20240101"


def test_build_query_without_anything_is_empty() -> None:
    assert build_query() == ""
    assert build_query({}) == ""


@pytest.mark.parametrize(
    "key",
    [
        pytest.param("PatientNam", id="misspelled-keyword"),
        pytest.param("NotAKeyword", id="unknown-keyword"),
        pytest.param("PatientName.Bogus", id="unknown-in-sequence-path"),
        pytest.param("Bogus.PatientName", id="unknown-sequence"),
        pytest.param("PatientName.", id="trailing-dot"),
        pytest.param(".PatientName", id="leading-dot"),
        pytest.param("RequestAttributesSequence..PatientName", id="empty-path-segment"),
        pytest.param("", id="empty"),
        pytest.param("0010001", id="seven-hex-digits"),
        pytest.param("0010001G", id="non-hex"),
        pytest.param("PatientName&admin=1", id="injection"),
    ],
)
def test_build_query_refuses_unknown_attributes(key: str) -> None:
    with pytest.raises(DicomWebUsageError) as caught:
        build_query({key: "x"})
    assert isinstance(caught.value, ValueError)


@pytest.mark.parametrize(
    "tag",
    [
        pytest.param(-1, id="negative"),
        pytest.param(0x1_0000_0000, id="more-than-32-bits"),
    ],
)
def test_build_query_refuses_int_tags_outside_32_bits(tag: int) -> None:
    # f"{-1:08X}" is "-0000001": garbage that must not reach the server.
    with pytest.raises(DicomWebUsageError):
        build_query({tag: "x"})


@pytest.mark.parametrize(
    "field",
    [pytest.param("NotAKeyword", id="unknown-keyword"), pytest.param("", id="empty")],
)
def test_build_query_refuses_unknown_include_fields(field: str) -> None:
    with pytest.raises(DicomWebUsageError):
        build_query(include_fields=["PatientAge", field])


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param(["1.2.3", "1.2.4"], "1.2.3,1.2.4", id="two-uid-list"),
        pytest.param(["1.2.3", "1.2.4", "1.2.5"], "1.2.3,1.2.4,1.2.5", id="three-uid-list"),
        pytest.param(("1.2.3", "1.2.4", "1.2.5"), "1.2.3,1.2.4,1.2.5", id="three-uid-tuple"),
        pytest.param(["1.2.3"], "1.2.3", id="one-uid-list"),
    ],
)
def test_build_query_joins_uid_lists_with_commas(value: object, expected: str) -> None:
    assert build_query({"StudyInstanceUID": value}) == f"StudyInstanceUID={expected}"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param(
            (datetime.date(2024, 1, 1), datetime.date(2024, 2, 1)),
            "20240101-20240201",
            id="closed-date-range",
        ),
        pytest.param((datetime.date(2024, 1, 1), None), "20240101-", id="open-end"),
        pytest.param((None, datetime.date(2024, 2, 1)), "-20240201", id="open-start"),
        pytest.param(("20240101", "20240201"), "20240101-20240201", id="string-range"),
        pytest.param(datetime.date(2024, 3, 9), "20240309", id="single-date"),
    ],
)
def test_build_query_formats_dates_and_ranges(value: object, expected: str) -> None:
    assert build_query({"StudyDate": value}) == f"StudyDate={expected}"


def test_build_query_formats_times_and_datetimes() -> None:
    assert build_query({"StudyTime": datetime.time(7, 5, 9)}) == "StudyTime=070509"
    when = (datetime.datetime(2024, 1, 1, 8, 0, 0), datetime.datetime(2024, 1, 1, 17, 30, 0))
    assert (
        build_query({"AcquisitionDateTime": when})
        == "AcquisitionDateTime=20240101080000-20240101173000"
    )
    assert build_query({"StudyTime": (datetime.time(8), None)}) == "StudyTime=080000-"


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(True, id="bool"),
        pytest.param(object(), id="object"),
        pytest.param({"a": 1}, id="dict"),
        pytest.param(None, id="none"),
    ],
)
def test_build_query_refuses_unsupported_values(value: object) -> None:
    with pytest.raises(DicomWebUsageError):
        build_query({"PatientName": value})


def test_build_query_repeats_includefield_per_attribute() -> None:
    query = build_query(include_fields=["PatientAge", "00100040", 0x00080060])
    assert query == "includefield=PatientAge&includefield=00100040&includefield=00080060"


@pytest.mark.parametrize(
    "include",
    [pytest.param("all", id="string"), pytest.param(["all"], id="list")],
)
def test_build_query_includefield_all(include: object) -> None:
    assert build_query(include_fields=include) == "includefield=all"  # type: ignore[arg-type]


def test_build_query_single_include_field_string_is_one_attribute() -> None:
    assert build_query(include_fields="PatientAge") == "includefield=PatientAge"


@pytest.mark.parametrize(
    ("fuzzy", "expected"),
    [
        pytest.param(True, "fuzzymatching=true", id="true"),
        pytest.param(False, "fuzzymatching=false", id="false"),
        pytest.param(None, "", id="unset"),
    ],
)
def test_build_query_fuzzymatching(fuzzy: bool | None, expected: str) -> None:
    assert build_query(fuzzy=fuzzy) == expected


def test_build_query_puts_everything_together() -> None:
    query = build_query(
        {"PatientName": "DOE^J*", "StudyDate": (datetime.date(2024, 1, 1), None)},
        include_fields=["PatientAge"],
        fuzzy=True,
        limit=10,
        offset=20,
    )
    assert query == (
        "PatientName=DOE^J*&StudyDate=20240101-&includefield=PatientAge"
        "&fuzzymatching=true&limit=10&offset=20"
    )


@pytest.mark.parametrize(
    ("limit", "offset", "expected"),
    [
        pytest.param(0, None, "limit=0", id="zero-limit"),
        pytest.param(None, 0, "offset=0", id="zero-offset"),
        pytest.param(5, 100, "limit=5&offset=100", id="both"),
    ],
)
def test_build_query_limit_and_offset(
    limit: int | None, offset: int | None, expected: str
) -> None:
    assert build_query(limit=limit, offset=offset) == expected


@pytest.mark.parametrize(
    "kwargs",
    [
        pytest.param({"limit": -1}, id="negative-limit"),
        pytest.param({"offset": -1}, id="negative-offset"),
        pytest.param({"limit": True}, id="bool-limit"),
        pytest.param({"offset": False}, id="bool-offset"),
        pytest.param({"limit": 2.0}, id="float-limit"),
        pytest.param({"offset": "10"}, id="str-offset"),
    ],
)
def test_build_query_refuses_bad_limit_and_offset(kwargs: dict[str, object]) -> None:
    with pytest.raises(DicomWebUsageError) as caught:
        build_query(**kwargs)  # type: ignore[arg-type]
    assert isinstance(caught.value, ValueError)


@pytest.mark.parametrize(
    "char",
    [
        pytest.param("^", id="caret"),
        pytest.param("*", id="star"),
        pytest.param("?", id="question"),
        pytest.param("-", id="dash"),
        pytest.param(".", id="dot"),
        pytest.param(",", id="comma"),
    ],
)
def test_build_query_keeps_dicom_matching_characters_literal(char: str) -> None:
    # Orthanc 1.10 / DICOMweb 1.7 does not percent-decode query values.
    assert build_query({"PatientName": f"A{char}B"}) == f"PatientName=A{char}B"


@pytest.mark.parametrize(
    ("char", "encoded"),
    [
        pytest.param("&", "%26", id="ampersand"),
        pytest.param("=", "%3D", id="equals"),
        pytest.param("#", "%23", id="hash"),
        pytest.param("+", "%2B", id="plus"),
        pytest.param(" ", "%20", id="space"),
        pytest.param("%", "%25", id="percent"),
    ],
)
def test_build_query_percent_encodes_query_delimiters(char: str, encoded: str) -> None:
    assert build_query({"PatientName": f"A{char}B"}) == f"PatientName=A{encoded}B"


def test_build_query_value_with_delimiters_round_trips_as_one_parameter() -> None:
    value = "DOE^J* & co=1 #2 +3 50%"
    query = build_query({"PatientName": value, "Modality": "CT"})
    assert parse_qsl(query, keep_blank_values=True) == [
        ("PatientName", value),
        ("Modality", "CT"),
    ]


def test_build_query_orthanc_wildcard_name_is_sent_verbatim() -> None:
    assert build_query({"PatientName": "DOE^J*"}, limit=10) == "PatientName=DOE^J*&limit=10"


# -- redaction --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        pytest.param(
            "http://user:hunter2@pacs.test/dicom-web",
            "http://pacs.test/dicom-web",
            id="user-and-password",
        ),
        pytest.param(
            "https://user:p%40ss@pacs.test:8443/dicom-web/studies?PatientID=1#frag",
            "https://pacs.test:8443/dicom-web/studies?PatientID=1#frag",
            id="port-query-fragment",
        ),
        pytest.param("http://user@pacs.test/x", "http://pacs.test/x", id="user-only"),
        pytest.param("http://:secret@pacs.test/x", "http://pacs.test/x", id="password-only"),
        pytest.param(
            "http://u:p@[::1]:8042/dicom-web", "http://[::1]:8042/dicom-web", id="ipv6-host"
        ),
        pytest.param(
            "http://pacs.test:8042/dicom-web", "http://pacs.test:8042/dicom-web", id="no-userinfo"
        ),
    ],
)
def test_redact_url_removes_user_information(url: str, expected: str) -> None:
    redacted = redact_url(url)
    assert redacted == expected
    assert "@" not in redacted.split("?")[0]


@pytest.mark.parametrize(
    ("match", "sent"),
    [
        ({"StudyDate": "2024-01-15"}, "StudyDate=20240115"),
        ({"StudyDate": "2024-01-01-2024-12-31"}, "StudyDate=20240101-20241231"),
        ({"StudyDate": "-2024-12-31"}, "StudyDate=-20241231"),
        ({"StudyDate": "20240101-"}, "StudyDate=20240101-"),
        ({"00080020": "2024-01-15"}, "00080020=20240115"),
        ({"StudyTime": "08:30-12:00:15.5"}, "StudyTime=0830-120015.5"),
        ({"AcquisitionDateTime": "2024-01-15T08:30:00"}, "AcquisitionDateTime=20240115083000"),
        ({"PatientName": "DOE^J*"}, "PatientName=DOE^J*"),  # not a date: untouched
    ],
)
def test_iso_dates_and_times_become_dicom_ones(match, sent):
    assert build_query(match) == sent


@pytest.mark.parametrize(
    ("match", "form"),
    [
        ({"StudyDate": "2024/01/15"}, "not a DA value: use YYYYMMDD"),
        ({"StudyDate": "15-01-2024"}, "not a DA value"),
        ({"StudyDate": "2024*"}, "not a DA value"),
        ({"StudyDate": "-"}, "not a DA value"),
        ({"StudyTime": "8h30"}, "not a TM value: use HHMMSS"),
        ({"AcquisitionDateTime": "yesterday"}, "not a DT value"),
    ],
)
def test_a_date_or_time_in_no_known_form_is_refused_with_the_form_expected(match, form):
    with pytest.raises(DicomWebUsageError, match=form):
        build_query(match)
