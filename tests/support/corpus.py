"""Put generated instances into Orthanc through its own REST API and read them back.

Setup and verification deliberately avoid aiodicomweb: the client under test
never prepares its own fixtures or judges its own results.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from tests.support.dicomgen import Instance
from tests.support.orthanc import OrthancServer


def upload_instances(server: OrthancServer, instances: Iterable[Instance]) -> None:
    """POST each instance to Orthanc's `/instances` with a few threads."""

    def post(instance: Instance) -> None:
        answer = json.loads(server.rest("POST", "/instances", instance.data))
        if answer.get("Status") not in ("Success", "AlreadyStored"):
            raise RuntimeError(f"Orthanc refused {instance.sop_instance_uid}: {answer}")

    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(post, instances))


def orthanc_id(server: OrthancServer, uid: str, level: str) -> str | None:
    """Orthanc's internal ID of the resource with DICOM `uid` at `level`, if any."""
    matches = server.rest_json("POST", "/tools/lookup", uid.encode())
    assert isinstance(matches, list)
    for match in matches:
        if match["Type"] == level:
            return str(match["ID"])
    return None


def stored_bytes(server: OrthancServer, sop_instance_uid: str) -> bytes:
    """The exact bytes Orthanc holds for an instance."""
    instance_id = orthanc_id(server, sop_instance_uid, "Instance")
    if instance_id is None:
        raise LookupError(f"Orthanc holds no instance {sop_instance_uid}")
    return server.rest("GET", f"/instances/{instance_id}/file")


def delete_study(server: OrthancServer, study_uid: str) -> None:
    """Remove a study through Orthanc's REST API if it exists (test cleanup)."""
    study_id = orthanc_id(server, study_uid, "Study")
    if study_id is not None:
        server.rest("DELETE", f"/studies/{study_id}")


@dataclass(frozen=True)
class Corpus:
    """The instances a fixture uploaded, with look-ups by study and series."""

    instances: Sequence[Instance]

    def study(self, study_uid: str) -> list[Instance]:
        return [i for i in self.instances if i.study_uid == study_uid]

    def series(self, series_uid: str) -> list[Instance]:
        return [i for i in self.instances if i.series_uid == series_uid]

    @property
    def study_uids(self) -> list[str]:
        return sorted({i.study_uid for i in self.instances})

    def series_uids(self, study_uid: str) -> list[str]:
        return sorted({i.series_uid for i in self.study(study_uid)})
