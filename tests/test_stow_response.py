"""Tests of the STOW-RS response model (aiodicomweb._stow_response): pure, bytes in, values out."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aiodicomweb._exceptions import UnexpectedResponseError
from aiodicomweb._stow_response import (
    FailedInstance,
    StoredInstance,
    StoreResult,
    describe_failure,
    describe_warning,
    parse_store_response,
)

CT = "1.2.840.10008.5.1.4.1.1.2"
STUDY = "1.2.826.0.1.3680043.8.498.4711.901"
OTHER = "1.2.826.0.1.3680043.8.498.4711.902"
BASE = "http://127.0.0.1:46199/dicom-web"

# --- Responses captured from a real Orthanc ----------------------------------------
# Orthanc 1.10.1 with its DICOMweb plugin 1.7 (Debian bookworm packages), started by
# tests/support/orthanc.py. A throw-away script POSTed multipart/related;
# type="application/dicom" bodies of tests/support/dicomgen.py instances (study 901,
# series 1, and study 902) to /dicom-web/studies[/{uid}] with Accept
# application/dicom+json or application/dicom+xml. The XML is verbatim; the JSON was
# re-indented with json.dumps(indent=1) (Orthanc indents with tabs). Status and
# Content-Type as received:
#   ORTHANC_200_JSON / _XML: two valid instances; 200, application/dicom+json / +xml.
#   ORTHANC_400_PARTIAL_JSON: one valid instance + one non-DICOM part; 400 and no
#     Content-Type. The valid one is stored and listed; the bad part is listed nowhere.
#   ORTHANC_400_NOTHING_XML: only a non-DICOM part; 400, no Content-Type, both
#     sequences empty.
#   ORTHANC_409_MISMATCH_JSON / _XML: a study-902 instance POSTed to
#     /studies/{study 901}; 409, no Content-Type, FailureReason 272 (0x0110).
#   ORTHANC_409_MIXED_JSON: a study-901 and a study-902 instance POSTed to
#     /studies/{study 901}; 409, no Content-Type, yet the 901 instance was stored
#     (checked through Orthanc's REST API) and is listed in ReferencedSOPSequence.

ORTHANC_200_JSON = """\
{
 "00080005": {
  "Value": [
   "ISO_IR 100"
  ],
  "vr": "CS"
 },
 "00081190": {
  "Value": [
   "http://127.0.0.1:46199/dicom-web/studies/1.2.826.0.1.3680043.8.498.4711.901"
  ],
  "vr": "UR"
 },
 "00081198": {
  "vr": "SQ"
 },
 "00081199": {
  "Value": [
   {
    "00081150": {
     "Value": [
      "1.2.840.10008.5.1.4.1.1.2"
     ],
     "vr": "UI"
    },
    "00081155": {
     "Value": [
      "1.2.826.0.1.3680043.8.498.4711.901.1.1"
     ],
     "vr": "UI"
    },
    "00081190": {
     "Value": [
      "http://127.0.0.1:46199/dicom-web/studies/1.2.826.0.1.3680043.8.498.4711.901/series/1.2.826.0.1.3680043.8.498.4711.901.1/instances/1.2.826.0.1.3680043.8.498.4711.901.1.1"
     ],
     "vr": "UR"
    }
   },
   {
    "00081150": {
     "Value": [
      "1.2.840.10008.5.1.4.1.1.2"
     ],
     "vr": "UI"
    },
    "00081155": {
     "Value": [
      "1.2.826.0.1.3680043.8.498.4711.901.1.2"
     ],
     "vr": "UI"
    },
    "00081190": {
     "Value": [
      "http://127.0.0.1:46199/dicom-web/studies/1.2.826.0.1.3680043.8.498.4711.901/series/1.2.826.0.1.3680043.8.498.4711.901.1/instances/1.2.826.0.1.3680043.8.498.4711.901.1.2"
     ],
     "vr": "UR"
    }
   }
  ],
  "vr": "SQ"
 }
}
"""

ORTHANC_200_XML = """\
<?xml version="1.0" encoding="utf-8"?>
<NativeDicomModel xmlns="http://dicom.nema.org/PS3.19/models/NativeDICOM" xsi:schemaLocation="http://dicom.nema.org/PS3.19/models/NativeDICOM" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
  <DicomAttribute tag="00080005" vr="CS" keyword="SpecificCharacterSet">
    <Value number="1">ISO_IR 100</Value>
  </DicomAttribute>
  <DicomAttribute tag="00081190" vr="UR" keyword="RetrieveURL">
    <Value number="1">http://127.0.0.1:46199/dicom-web/studies/1.2.826.0.1.3680043.8.498.4711.901</Value>
  </DicomAttribute>
  <DicomAttribute tag="00081198" vr="SQ" keyword="FailedSOPSequence" />
  <DicomAttribute tag="00081199" vr="SQ" keyword="ReferencedSOPSequence">
    <Item number="1">
      <DicomAttribute tag="00081150" vr="UI" keyword="ReferencedSOPClassUID">
        <Value number="1">1.2.840.10008.5.1.4.1.1.2</Value>
      </DicomAttribute>
      <DicomAttribute tag="00081155" vr="UI" keyword="ReferencedSOPInstanceUID">
        <Value number="1">1.2.826.0.1.3680043.8.498.4711.901.1.1</Value>
      </DicomAttribute>
      <DicomAttribute tag="00081190" vr="UR" keyword="RetrieveURL">
        <Value number="1">http://127.0.0.1:46199/dicom-web/studies/1.2.826.0.1.3680043.8.498.4711.901/series/1.2.826.0.1.3680043.8.498.4711.901.1/instances/1.2.826.0.1.3680043.8.498.4711.901.1.1</Value>
      </DicomAttribute>
    </Item>
    <Value number="1" />
    <Item number="2">
      <DicomAttribute tag="00081150" vr="UI" keyword="ReferencedSOPClassUID">
        <Value number="1">1.2.840.10008.5.1.4.1.1.2</Value>
      </DicomAttribute>
      <DicomAttribute tag="00081155" vr="UI" keyword="ReferencedSOPInstanceUID">
        <Value number="1">1.2.826.0.1.3680043.8.498.4711.901.1.2</Value>
      </DicomAttribute>
      <DicomAttribute tag="00081190" vr="UR" keyword="RetrieveURL">
        <Value number="1">http://127.0.0.1:46199/dicom-web/studies/1.2.826.0.1.3680043.8.498.4711.901/series/1.2.826.0.1.3680043.8.498.4711.901.1/instances/1.2.826.0.1.3680043.8.498.4711.901.1.2</Value>
      </DicomAttribute>
    </Item>
    <Value number="2" />
  </DicomAttribute>
</NativeDicomModel>
"""  # noqa: E501

ORTHANC_400_PARTIAL_JSON = """\
{
 "00080005": {
  "Value": [
   "ISO_IR 100"
  ],
  "vr": "CS"
 },
 "00081190": {
  "Value": [
   "http://127.0.0.1:46199/dicom-web/studies/1.2.826.0.1.3680043.8.498.4711.901"
  ],
  "vr": "UR"
 },
 "00081198": {
  "vr": "SQ"
 },
 "00081199": {
  "Value": [
   {
    "00081150": {
     "Value": [
      "1.2.840.10008.5.1.4.1.1.2"
     ],
     "vr": "UI"
    },
    "00081155": {
     "Value": [
      "1.2.826.0.1.3680043.8.498.4711.901.1.3"
     ],
     "vr": "UI"
    },
    "00081190": {
     "Value": [
      "http://127.0.0.1:46199/dicom-web/studies/1.2.826.0.1.3680043.8.498.4711.901/series/1.2.826.0.1.3680043.8.498.4711.901.1/instances/1.2.826.0.1.3680043.8.498.4711.901.1.3"
     ],
     "vr": "UR"
    }
   }
  ],
  "vr": "SQ"
 }
}
"""

ORTHANC_400_NOTHING_XML = """\
<?xml version="1.0" encoding="utf-8"?>
<NativeDicomModel xmlns="http://dicom.nema.org/PS3.19/models/NativeDICOM" xsi:schemaLocation="http://dicom.nema.org/PS3.19/models/NativeDICOM" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
  <DicomAttribute tag="00080005" vr="CS" keyword="SpecificCharacterSet">
    <Value number="1">ISO_IR 100</Value>
  </DicomAttribute>
  <DicomAttribute tag="00081198" vr="SQ" keyword="FailedSOPSequence" />
  <DicomAttribute tag="00081199" vr="SQ" keyword="ReferencedSOPSequence" />
</NativeDicomModel>
"""  # noqa: E501

ORTHANC_409_MISMATCH_JSON = """\
{
 "00080005": {
  "Value": [
   "ISO_IR 100"
  ],
  "vr": "CS"
 },
 "00081198": {
  "Value": [
   {
    "00081150": {
     "Value": [
      "1.2.840.10008.5.1.4.1.1.2"
     ],
     "vr": "UI"
    },
    "00081155": {
     "Value": [
      "1.2.826.0.1.3680043.8.498.4711.902.1.1"
     ],
     "vr": "UI"
    },
    "00081197": {
     "Value": [
      272
     ],
     "vr": "US"
    }
   }
  ],
  "vr": "SQ"
 },
 "00081199": {
  "vr": "SQ"
 }
}
"""

ORTHANC_409_MISMATCH_XML = """\
<?xml version="1.0" encoding="utf-8"?>
<NativeDicomModel xmlns="http://dicom.nema.org/PS3.19/models/NativeDICOM" xsi:schemaLocation="http://dicom.nema.org/PS3.19/models/NativeDICOM" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
  <DicomAttribute tag="00080005" vr="CS" keyword="SpecificCharacterSet">
    <Value number="1">ISO_IR 100</Value>
  </DicomAttribute>
  <DicomAttribute tag="00081198" vr="SQ" keyword="FailedSOPSequence">
    <Item number="1">
      <DicomAttribute tag="00081150" vr="UI" keyword="ReferencedSOPClassUID">
        <Value number="1">1.2.840.10008.5.1.4.1.1.2</Value>
      </DicomAttribute>
      <DicomAttribute tag="00081155" vr="UI" keyword="ReferencedSOPInstanceUID">
        <Value number="1">1.2.826.0.1.3680043.8.498.4711.902.1.1</Value>
      </DicomAttribute>
      <DicomAttribute tag="00081197" vr="US" keyword="FailureReason">
        <Value number="1">272</Value>
      </DicomAttribute>
    </Item>
    <Value number="1" />
  </DicomAttribute>
  <DicomAttribute tag="00081199" vr="SQ" keyword="ReferencedSOPSequence" />
</NativeDicomModel>
"""  # noqa: E501

ORTHANC_409_MIXED_JSON = """\
{
 "00080005": {
  "Value": [
   "ISO_IR 100"
  ],
  "vr": "CS"
 },
 "00081190": {
  "Value": [
   "http://127.0.0.1:46199/dicom-web/studies/1.2.826.0.1.3680043.8.498.4711.901"
  ],
  "vr": "UR"
 },
 "00081198": {
  "Value": [
   {
    "00081150": {
     "Value": [
      "1.2.840.10008.5.1.4.1.1.2"
     ],
     "vr": "UI"
    },
    "00081155": {
     "Value": [
      "1.2.826.0.1.3680043.8.498.4711.902.1.1"
     ],
     "vr": "UI"
    },
    "00081197": {
     "Value": [
      272
     ],
     "vr": "US"
    }
   }
  ],
  "vr": "SQ"
 },
 "00081199": {
  "Value": [
   {
    "00081150": {
     "Value": [
      "1.2.840.10008.5.1.4.1.1.2"
     ],
     "vr": "UI"
    },
    "00081155": {
     "Value": [
      "1.2.826.0.1.3680043.8.498.4711.901.1.1"
     ],
     "vr": "UI"
    },
    "00081190": {
     "Value": [
      "http://127.0.0.1:46199/dicom-web/studies/1.2.826.0.1.3680043.8.498.4711.901/series/1.2.826.0.1.3680043.8.498.4711.901.1/instances/1.2.826.0.1.3680043.8.498.4711.901.1.1"
     ],
     "vr": "UR"
    }
   }
  ],
  "vr": "SQ"
 }
}
"""


def _json(dataset: object) -> bytes:
    return json.dumps(dataset).encode()


def _uids(items: tuple[StoredInstance, ...] | tuple[FailedInstance, ...]) -> list[str | None]:
    return [item.sop_instance_uid for item in items]


def _sq(*items: dict[str, object]) -> dict[str, object]:
    return {"vr": "SQ", "Value": list(items)}


def _ui(value: str) -> dict[str, object]:
    return {"vr": "UI", "Value": [value]}


def _us(value: object) -> dict[str, object]:
    return {"vr": "US", "Value": [value]}


def _item(uid: str, **extra: dict[str, object]) -> dict[str, object]:
    return {"00081150": _ui(CT), "00081155": _ui(uid), **extra}


PARTIAL_JSON = _json(
    {
        "00081190": {"vr": "UR", "Value": [f"{BASE}/studies/{STUDY}"]},
        "00081199": _sq(
            _item(f"{STUDY}.1.1"),
            _item(f"{STUDY}.1.2", **{"00081196": _us(0xB000)}),
        ),
        "00081198": _sq(_item(f"{STUDY}.1.3", **{"00081197": _us(0xA700)})),
    }
)

PARTIAL_XML = f"""\
<?xml version="1.0" encoding="UTF-8"?>
<NativeDicomModel xml:space="preserve">
  <DicomAttribute tag="00081190" vr="UR" keyword="RetrieveURL">
    <Value number="1">{BASE}/studies/{STUDY}</Value>
  </DicomAttribute>
  <DicomAttribute tag="00081199" vr="SQ" keyword="ReferencedSOPSequence">
    <Item number="1">
      <DicomAttribute tag="00081150" vr="UI"><Value number="1">{CT}</Value></DicomAttribute>
      <DicomAttribute tag="00081155" vr="UI"><Value number="1">{STUDY}.1.1</Value></DicomAttribute>
    </Item>
    <Item number="2">
      <DicomAttribute tag="00081150" vr="UI"><Value number="1">{CT}</Value></DicomAttribute>
      <DicomAttribute tag="00081155" vr="UI"><Value number="1">{STUDY}.1.2</Value></DicomAttribute>
      <DicomAttribute tag="00081196" vr="US"><Value number="1">45056</Value></DicomAttribute>
    </Item>
  </DicomAttribute>
  <DicomAttribute tag="00081198" vr="SQ" keyword="FailedSOPSequence">
    <Item number="1">
      <DicomAttribute tag="00081150" vr="UI"><Value number="1">{CT}</Value></DicomAttribute>
      <DicomAttribute tag="00081155" vr="UI"><Value number="1">{STUDY}.1.3</Value></DicomAttribute>
      <DicomAttribute tag="00081197" vr="US"><Value number="1">42752</Value></DicomAttribute>
    </Item>
  </DicomAttribute>
</NativeDicomModel>
""".encode()

BILLION_LAUGHS = b"""\
<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
]>
<NativeDicomModel><DicomAttribute tag="00081190" vr="UR"><Value number="1">&lol4;</Value>
</DicomAttribute></NativeDicomModel>
"""


# --- Code names ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "text"),
    [
        pytest.param(0xA700, "out of resources", id="A700"),
        pytest.param(0xA7FF, "out of resources", id="A7FF-range"),
        pytest.param(0xA900, "data set does not match SOP class", id="A900"),
        pytest.param(0xA9C3, "data set does not match SOP class", id="A9xx-range"),
        pytest.param(0xC000, "cannot understand", id="C000"),
        pytest.param(0xCFFF, "cannot understand", id="CFFF-range"),
        pytest.param(0xC122, "transfer syntax not supported", id="C122-before-range"),
        pytest.param(0x0110, "processing failure", id="0110-orthanc"),
        pytest.param(0x0122, "SOP class not supported", id="0122"),
        pytest.param(0x0124, "not authorized", id="0124"),
        pytest.param(0x0211, "unrecognized operation", id="0211"),
        pytest.param(0x0213, "resource limitation", id="0213"),
        pytest.param(0x1234, "failure reason 0x1234", id="unknown"),
        pytest.param(0xBEEF, "failure reason 0xBEEF", id="unknown-upper-hex"),
        pytest.param(None, "no reason given", id="none"),
    ],
)
def test_describe_failure_names_ps3_18_codes(code: int | None, text: str) -> None:
    assert describe_failure(code) == text
    assert FailedInstance(None, "1.2", code).failure_text == text


@pytest.mark.parametrize(
    ("code", "text"),
    [
        pytest.param(0xB000, "coercion of data elements", id="B000"),
        pytest.param(0xB006, "elements discarded", id="B006"),
        pytest.param(0xB007, "data set does not match SOP class", id="B007"),
        pytest.param(0xB123, "warning reason 0xB123", id="unknown"),
    ],
)
def test_describe_warning_names_ps3_18_codes(code: int, text: str) -> None:
    assert describe_warning(code) == text
    assert StoredInstance(CT, "1.2", None, code).warning_text == text


def test_stored_instance_without_warning_has_no_warning_text() -> None:
    assert StoredInstance(CT, "1.2", None, None).warning_text is None


# --- StoreResult ----------------------------------------------------------------------


def _stored(uid: str, warning: int | None = None) -> StoredInstance:
    return StoredInstance(CT, uid, f"{BASE}/instances/{uid}", warning)


def _failed(uid: str | None, reason: int | None = 0xA700) -> FailedInstance:
    return FailedInstance(CT, uid, reason)


def test_empty_result_is_ok_and_says_nothing_stored() -> None:
    empty = StoreResult.empty()
    assert empty.ok
    assert empty.stored == () and empty.failed == () and empty.warnings == ()
    assert empty.retrieve_url is None
    assert empty.summary() == "0 stored, 0 failed"


def test_ok_is_false_as_soon_as_anything_failed() -> None:
    assert StoreResult((_stored("1.1"),), ()).ok
    assert not StoreResult((_stored("1.1"),), (_failed("1.2"),)).ok
    assert not StoreResult((), (_failed(None, None),)).ok


def test_merge_concatenates_entries_and_warnings_in_order() -> None:
    first = StoreResult((_stored("1.1"),), (_failed("1.2"),), warnings=("199 a",))
    second = StoreResult((_stored("1.3"),), (_failed("1.4"),), warnings=("199 b",))
    merged = first.merge(second)
    assert _uids(merged.stored) == ["1.1", "1.3"]
    assert _uids(merged.failed) == ["1.2", "1.4"]
    assert merged.warnings == ("199 a", "199 b")


def test_merge_with_empty_is_identity() -> None:
    result = StoreResult((_stored("1.1"),), (_failed("1.2"),), "url", ("note",))
    assert StoreResult.empty().merge(result) == result
    assert result.merge(StoreResult.empty()) == result


@pytest.mark.parametrize(
    ("first", "second", "url"),
    [
        pytest.param("u1", "u1", "u1", id="same-study"),
        pytest.param("u1", "u2", None, id="two-studies"),
        pytest.param("u1", None, None, id="stored-without-url"),
    ],
)
def test_merge_keeps_a_study_url_only_when_all_agree(
    first: str | None, second: str | None, url: str | None
) -> None:
    a = StoreResult((_stored("1.1"),), (), first)
    b = StoreResult((_stored("1.2"),), (), second)
    assert a.merge(b).retrieve_url == url


def test_merge_ignores_the_url_of_a_batch_that_stored_nothing() -> None:
    stored = StoreResult((_stored("1.1"),), (), "u1")
    failed_only = StoreResult((), (_failed("1.2"),))
    assert stored.merge(failed_only).retrieve_url == "u1"
    assert failed_only.merge(stored).retrieve_url == "u1"


def test_merge_is_associative_so_batch_order_of_folding_does_not_matter() -> None:
    a = StoreResult((_stored("1.1"),), (), "u1")
    b = StoreResult((_stored("2.1"),), (), "u2")
    c = StoreResult((_stored("1.2"),), (), "u1")
    assert a.merge(b).merge(c) == a.merge(b.merge(c))
    assert a.merge(b).merge(c).retrieve_url is None


@pytest.mark.parametrize(
    ("result", "line"),
    [
        pytest.param(
            StoreResult(tuple(_stored(f"1.{n}") for n in range(12)), ()),
            "12 stored, 0 failed",
            id="all-stored",
        ),
        pytest.param(
            StoreResult(tuple(_stored(f"1.{n}") for n in range(12)), (_failed("1.2.3"),)),
            "12 stored, 1 failed (1.2.3: out of resources)",
            id="one-failed",
        ),
        pytest.param(
            StoreResult((), tuple(_failed(f"1.{n}", 0x0110) for n in range(5))),
            "0 stored, 5 failed (1.0: processing failure; 1.1: processing failure; "
            "1.2: processing failure; and 2 more)",
            id="many-failed-truncated",
        ),
        pytest.param(
            StoreResult((_stored("1.1", 0xB000), _stored("1.2")), ()),
            "2 stored, 0 failed, 1 stored with warnings",
            id="warnings",
        ),
        pytest.param(
            StoreResult((), (FailedInstance(None, None, None, source="/data/x.dcm"),)),
            "0 stored, 1 failed (/data/x.dcm: no reason given)",
            id="source-when-no-uid",
        ),
        pytest.param(
            StoreResult((), (FailedInstance(None, None, None),)),
            "0 stored, 1 failed (unidentified instance(s): no reason given)",
            id="placeholder",
        ),
    ],
)
def test_summary_is_one_readable_line(result: StoreResult, line: str) -> None:
    assert result.summary() == line


# --- Parsing what Orthanc really answers ------------------------------------------------


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        pytest.param(ORTHANC_200_JSON, "application/dicom+json", id="json"),
        pytest.param(ORTHANC_200_XML, "application/dicom+xml", id="xml"),
    ],
)
def test_orthanc_200_lists_every_stored_instance(body: str, content_type: str) -> None:
    result = parse_store_response(200, content_type, body.encode())
    assert result.ok
    assert result.warnings == ()
    assert result.retrieve_url == f"{BASE}/studies/{STUDY}"
    assert _uids(result.stored) == [f"{STUDY}.1.1", f"{STUDY}.1.2"]
    first = result.stored[0]
    assert first.sop_class_uid == CT
    assert first.warning_reason is None
    assert first.retrieve_url == (f"{BASE}/studies/{STUDY}/series/{STUDY}.1/instances/{STUDY}.1.1")


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(ORTHANC_409_MISMATCH_JSON, id="json"),
        pytest.param(ORTHANC_409_MISMATCH_XML, id="xml"),
    ],
)
def test_orthanc_409_study_mismatch_reports_the_failed_instance(body: str) -> None:
    result = parse_store_response(409, None, body.encode())
    assert not result.ok
    assert result.stored == ()
    assert result.failed == (FailedInstance(CT, f"{OTHER}.1.1", 0x0110),)
    assert result.failed[0].failure_text == "processing failure"
    assert result.warnings == ()
    assert result.summary() == f"0 stored, 1 failed ({OTHER}.1.1: processing failure)"


def test_orthanc_409_mixed_keeps_the_instance_it_did_store() -> None:
    result = parse_store_response(409, None, ORTHANC_409_MIXED_JSON.encode())
    assert _uids(result.stored) == [f"{STUDY}.1.1"]
    assert _uids(result.failed) == [f"{OTHER}.1.1"]
    assert result.retrieve_url == f"{BASE}/studies/{STUDY}"
    assert not result.ok


def test_orthanc_400_partial_lists_stored_and_adds_a_placeholder_for_the_rest() -> None:
    result = parse_store_response(400, None, ORTHANC_400_PARTIAL_JSON.encode())
    assert _uids(result.stored) == [f"{STUDY}.1.3"]
    assert result.failed == (FailedInstance(None, None, None),)
    assert not result.ok
    assert result.warnings == (
        "HTTP 400 but no failed instance was listed; some instances were not stored",
    )


def test_orthanc_400_nothing_stored_is_a_placeholder_failure() -> None:
    result = parse_store_response(400, None, ORTHANC_400_NOTHING_XML.encode())
    assert result.stored == ()
    assert result.failed == (FailedInstance(None, None, None),)
    assert result.retrieve_url is None


# --- Parsing: formats, media types, charsets --------------------------------------------


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        pytest.param(PARTIAL_JSON, "application/dicom+json", id="dicom+json"),
        pytest.param(PARTIAL_JSON, "application/json", id="json"),
        pytest.param(PARTIAL_JSON, "application/dicom+json; charset=utf-8", id="json-charset"),
        pytest.param(PARTIAL_JSON, 'Application/DICOM+JSON;Charset="UTF-8"', id="json-case"),
        pytest.param(PARTIAL_JSON, "application/dicom+json; charset=nonsense", id="bad-charset"),
        pytest.param(PARTIAL_JSON, None, id="json-sniffed"),
        pytest.param(PARTIAL_JSON, "", id="json-sniffed-empty-header"),
        pytest.param(b"\xef\xbb\xbf" + PARTIAL_JSON, "application/json", id="json-utf8-bom"),
        pytest.param(
            PARTIAL_JSON.decode().encode("utf-16"),
            "application/dicom+json; charset=utf-16",
            id="json-utf16",
        ),
        pytest.param(b"[" + PARTIAL_JSON + b"]", "application/dicom+json", id="json-in-list"),
        pytest.param(PARTIAL_XML, "application/dicom+xml", id="dicom+xml"),
        pytest.param(PARTIAL_XML, "application/xml", id="xml"),
        pytest.param(PARTIAL_XML, "text/xml", id="text-xml"),
        pytest.param(PARTIAL_XML, "application/dicom+xml; charset=UTF-8", id="xml-charset"),
        pytest.param(PARTIAL_XML, None, id="xml-sniffed"),
        pytest.param(
            PARTIAL_XML.decode().encode("utf-16"), "application/dicom+xml", id="xml-utf16-bom"
        ),
    ],
)
def test_202_partial_reads_stored_warned_and_failed(body: bytes, content_type: str | None) -> None:
    result = parse_store_response(202, content_type, body)
    assert result.retrieve_url == f"{BASE}/studies/{STUDY}"
    assert result.stored == (
        StoredInstance(CT, f"{STUDY}.1.1", None, None),
        StoredInstance(CT, f"{STUDY}.1.2", None, 0xB000),
    )
    assert result.failed == (FailedInstance(CT, f"{STUDY}.1.3", 0xA700),)
    assert result.stored[1].warning_text == "coercion of data elements"
    assert result.warnings == ()
    assert not result.ok


def test_lowercase_hex_tag_keys_count_as_dicom_attributes() -> None:
    # The STOW-RS tags are all digits; the case rule matters for recognising a body as
    # DICOM JSON at all, and for other attributes a server adds.
    body = _json(
        {
            "0020000d": _ui(STUDY),
            "00081199": _sq({"00081155": _ui("1.2.4"), "0008119a": {"vr": "LO"}}),
        }
    )
    result = parse_store_response(200, "application/dicom+json", body)
    assert _uids(result.stored) == ["1.2.4"]
    only_lowercase = _json({"0020000d": _ui(STUDY), "7fe0000f": {"vr": "OB"}})
    assert parse_store_response(200, "application/dicom+json", only_lowercase).ok


def test_json_attribute_order_and_missing_values_do_not_matter() -> None:
    body = _json(
        {
            "00081199": _sq(
                {"00081155": _ui("1.2.4"), "00081150": {"vr": "UI"}, "00081190": {"vr": "UR"}}
            ),
            "00081198": {"vr": "SQ", "Value": []},
        }
    )
    result = parse_store_response(200, "application/dicom+json", body)
    assert result.stored == (StoredInstance(None, "1.2.4", None, None),)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param(42752, 0xA700, id="number"),
        pytest.param(42752.0, 0xA700, id="float-number"),
        pytest.param("42752", 0xA700, id="decimal-string"),
        pytest.param(" 0xA700 ", 0xA700, id="hex-string"),
        pytest.param("out of memory", None, id="text"),
        pytest.param(True, None, id="boolean"),
        pytest.param(None, None, id="null"),
    ],
)
def test_failure_reason_values_are_read_leniently(value: object, expected: int | None) -> None:
    body = _json({"00081198": _sq({"00081155": _ui("1.2.3"), "00081197": _us(value)})})
    result = parse_store_response(409, "application/dicom+json", body)
    assert result.failed == (FailedInstance(None, "1.2.3", expected),)


def test_uid_padding_is_stripped() -> None:
    body = _json({"00081199": _sq({"00081155": _ui("1.2.3\x00"), "00081150": _ui(CT + " ")})})
    result = parse_store_response(200, "application/dicom+json", body)
    assert result.stored[0].sop_instance_uid == "1.2.3"
    assert result.stored[0].sop_class_uid == CT


def test_xml_without_namespace_and_with_prefix_is_read() -> None:
    body = (
        b'<d:NativeDicomModel xmlns:d="http://dicom.nema.org/PS3.19/models/NativeDICOM">'
        b'<d:DicomAttribute tag="00081199" vr="SQ"><d:Item number="1">'
        b'<d:DicomAttribute tag="00081155" vr="UI"><d:Value number="1">1.2.3</d:Value>'
        b"</d:DicomAttribute></d:Item></d:DicomAttribute></d:NativeDicomModel>"
    )
    assert _uids(parse_store_response(200, "application/dicom+xml", body).stored) == ["1.2.3"]
    plain = body.replace(b"d:", b"").replace(
        b' xmlns:d="http://dicom.nema.org/PS3.19/models/NativeDICOM"', b""
    )
    assert _uids(parse_store_response(200, "text/xml", plain).stored) == ["1.2.3"]


# --- Status semantics -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "body"),
    [
        pytest.param(200, b"", id="200-empty"),
        pytest.param(200, b" \r\n ", id="200-whitespace"),
        pytest.param(204, b"", id="204"),
        pytest.param(200, b"{}", id="200-empty-json"),
        pytest.param(200, b"[]", id="200-empty-list"),
    ],
)
def test_success_without_details_is_an_empty_ok_result(status: int, body: bytes) -> None:
    assert parse_store_response(status, "application/dicom+json", body) == StoreResult.empty()


def test_200_trusts_failures_listed_in_the_body() -> None:
    body = _json({"00081198": _sq({"00081155": _ui("1.2.3"), "00081197": _us(0x0122)})})
    result = parse_store_response(200, "application/dicom+json", body)
    assert not result.ok
    assert result.failed[0].failure_text == "SOP class not supported"


def test_202_with_only_warnings_is_ok() -> None:
    body = _json({"00081199": _sq({"00081155": _ui("1.2.3"), "00081196": _us(0xB006)})})
    result = parse_store_response(202, "application/dicom+json", body)
    assert result.ok
    assert result.stored[0].warning_text == "elements discarded"


@pytest.mark.parametrize(
    ("status", "body", "note"),
    [
        pytest.param(202, b"", "HTTP 202 but no failed instance was listed", id="202-empty"),
        pytest.param(
            202,
            _json({"00081199": _sq({"00081155": _ui("1.2.3")})}),
            "HTTP 202 but no failed instance was listed",
            id="202-nothing-failed-nor-warned",
        ),
        pytest.param(409, b"", "HTTP 409 but no failed instance was listed", id="409-empty"),
        pytest.param(
            409, b"{}", "HTTP 409 but no failed instance was listed", id="409-empty-json"
        ),
        pytest.param(
            409,
            b"<html>Conflict</html>",
            "HTTP 409 with an unreadable body (STOW-RS response: XML is not a NativeDicomModel: "
            "<html>Conflict</html>)",
            id="409-html",
        ),
        pytest.param(
            409,
            b"Study UID mismatch",
            "HTTP 409 with an unreadable body (STOW-RS response: no Content-Type and neither "
            "JSON nor XML: Study UID mismatch)",
            id="409-text",
        ),
    ],
)
def test_failure_without_named_instances_gets_a_placeholder(
    status: int, body: bytes, note: str
) -> None:
    result = parse_store_response(status, None, body)
    assert not result.ok
    assert result.failed[-1] == FailedInstance(None, None, None)
    assert result.warnings == (f"{note}; some instances were not stored",)


@pytest.mark.parametrize("status", [400, 403, 409, 500])
@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"{not json", id="bad-json"),
        pytest.param(b"<NativeDicomModel>", id="bad-xml"),
        pytest.param(b'{"HttpError": "Conflict", "Message": "no"}', id="orthanc-rest-error"),
    ],
)
def test_failure_statuses_never_raise_on_a_bad_body(status: int, body: bytes) -> None:
    result = parse_store_response(status, "application/json", body)
    assert result.failed == (FailedInstance(None, None, None),)
    assert result.warnings[0].startswith(f"HTTP {status} with an unreadable body")


# --- Bodies that cannot be read under a success status ---------------------------------


@pytest.mark.parametrize(
    ("content_type", "body", "problem"),
    [
        pytest.param("application/dicom+json", b"{not json", "invalid JSON", id="bad-json"),
        pytest.param("application/dicom+json", b'"hello"', "not one DICOM dataset", id="string"),
        pytest.param("application/dicom+json", b"[{}, {}]", "not one DICOM dataset", id="list-2"),
        pytest.param(
            "application/dicom+json", b'{"error": "x"}', "no DICOM attribute", id="not-dicom"
        ),
        pytest.param(
            "application/dicom+json",
            b'{"00081199": "x"}',
            "malformed DICOM JSON attribute 00081199",
            id="attribute-not-object",
        ),
        pytest.param(
            "application/dicom+json",
            b'{"00081199": {"vr": "SQ", "Value": {}}}',
            "malformed DICOM JSON attribute 00081199",
            id="value-not-list",
        ),
        pytest.param("application/dicom+json", b"[" * 100_000, "invalid JSON", id="deep"),
        pytest.param(
            "application/dicom+json; charset=utf-8", b'{"\xff": 1}', "undecodable", id="bad-utf8"
        ),
        pytest.param("application/dicom+xml", b"<NativeDicomModel>", "invalid XML", id="bad-xml"),
        pytest.param(
            "application/xml", b"<html><body/></html>", "not a NativeDicomModel", id="xhtml"
        ),
        pytest.param("text/html", b"<h1>Stored</h1>", "unsupported media type", id="html"),
        pytest.param(None, b"Stored 3 instances", "neither JSON nor XML", id="plain-text"),
        pytest.param(
            'multipart/related; type="application/dicom+xml"',
            b"--x\r\n",
            "unsupported media type",
            id="multipart",
        ),
    ],
)
@pytest.mark.parametrize("status", [200, 202])
def test_unreadable_body_under_success_raises(
    status: int, content_type: str | None, body: bytes, problem: str
) -> None:
    with pytest.raises(UnexpectedResponseError, match="STOW-RS response") as caught:
        parse_store_response(status, content_type, body)
    assert problem in str(caught.value)
    assert isinstance(caught.value, ConnectionError)


def test_error_message_carries_a_short_excerpt_of_the_body() -> None:
    body = b"<h1>Proxy error</h1>\n" + b"x" * 10_000
    with pytest.raises(UnexpectedResponseError) as caught:
        parse_store_response(200, "text/html", body)
    message = str(caught.value)
    assert "<h1>Proxy error</h1> xxx" in message
    assert len(message) < 300


# --- Entity expansion -----------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(BILLION_LAUGHS, id="billion-laughs"),
        pytest.param(BILLION_LAUGHS.replace(b"DOCTYPE", b"doctype"), id="lowercase"),
        pytest.param(BILLION_LAUGHS.decode().encode("utf-16"), id="utf-16"),
        pytest.param(
            b'<?xml version="1.0"?><!DOCTYPE x SYSTEM "file:///etc/passwd"><NativeDicomModel/>',
            id="external-dtd",
        ),
        pytest.param(b'<NativeDicomModel><!ENTITY x "y"></NativeDicomModel>', id="stray-entity"),
    ],
)
def test_xml_with_a_dtd_is_refused(body: bytes) -> None:
    with pytest.raises(UnexpectedResponseError, match="XML with a DTD is refused"):
        parse_store_response(200, "application/dicom+xml", body)


def test_xml_bomb_under_409_is_refused_without_expanding() -> None:
    result = parse_store_response(409, None, BILLION_LAUGHS)
    assert result.failed == (FailedInstance(None, None, None),)
    assert "XML with a DTD is refused" in result.warnings[0]


# --- Properties -------------------------------------------------------------------------


@given(body=st.binary(max_size=300), status=st.sampled_from([400, 409, 500]))
def test_failure_status_always_yields_a_result_that_is_not_ok(body: bytes, status: int) -> None:
    for content_type in (None, "application/dicom+json", "application/dicom+xml"):
        assert not parse_store_response(status, content_type, body).ok


@given(body=st.binary(max_size=300))
def test_success_status_yields_a_result_or_unexpected_response_error(body: bytes) -> None:
    for content_type in (None, "application/dicom+json", "application/dicom+xml"):
        try:
            parse_store_response(200, content_type, body)
        except UnexpectedResponseError:
            pass
