"""A pytest plugin: dicomweb-client's `DICOMwebClient` becomes `aiodicomweb.compat`'s.

Loaded with `-p tests.peer.substitute` before the peer's conftest and test modules
import the class, so every test of the peer runs against the drop-in.

`PEER_HELPERS=1` lends the drop-in the peer's `_encode_multipart_message`, a
classmethod the peer's tests call to build the answers their test server sends
(test data, not the client under test); without it those tests fail on the
missing private name.
"""

from __future__ import annotations

import os

import dicomweb_client.api
import dicomweb_client.web

from aiodicomweb.compat import DICOMwebClient

_PEER = dicomweb_client.web.DICOMwebClient


class PeerTestClient(DICOMwebClient):
    """The drop-in, with the peer's multipart encoder for building test answers."""

    _encode_multipart_message = _PEER._encode_multipart_message


_SUBSTITUTE = PeerTestClient if os.environ.get("PEER_HELPERS") == "1" else DICOMwebClient
dicomweb_client.api.DICOMwebClient = _SUBSTITUTE  # type: ignore[misc]
dicomweb_client.web.DICOMwebClient = _SUBSTITUTE  # type: ignore[misc]
