"""Decoding JSON answers: the collector pause for large bodies leaves the collector as it was."""

from __future__ import annotations

import gc
import json

import pytest

from aiodicomweb._dicom_json import _GC_PAUSE_BYTES, loads

LISTING = json.dumps(
    [{"00080018": {"vr": "UI", "Value": [f"1.2.826.0.1.{i}"]}} for i in range(5000)]
).encode()


def test_a_large_answer_decodes_as_json_loads_and_the_collector_is_back_on() -> None:
    assert len(LISTING) > _GC_PAUSE_BYTES and gc.isenabled()
    assert loads(LISTING) == json.loads(LISTING)
    assert gc.isenabled()
    with pytest.raises(ValueError):
        loads(LISTING[:-1])
    assert gc.isenabled()


def test_a_collector_the_application_turned_off_stays_off() -> None:
    gc.disable()
    try:
        assert loads(LISTING) == json.loads(LISTING)
        assert not gc.isenabled()
    finally:
        gc.enable()
