"""Response bodies with gzip/deflate undone in bounded pieces, under expansion limits.

httpx's own decoders inflate a whole network chunk at once (a 256 KiB gzip chunk
of zeros becomes 256 MiB), so bodies are read raw and inflated here with
`max_length`: a "zip bomb" costs time, never memory, and a buffered answer that
inflates past its limits is refused before it is held.
"""

from __future__ import annotations

import zlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx

from aiodicomweb._exceptions import DicomWebUsageError, UnexpectedResponseError

__all__ = ["DEFAULT_LIMITS", "InflateLimits", "content_encoding", "decoded_body", "read_body"]

_PIECE = 1 << 20  # the most one step of inflation hands out


@dataclass(frozen=True)
class InflateLimits:
    """How far a compressed buffered answer may inflate.

    Legitimate DICOM JSON compresses 10-30:1 and a large series' metadata runs to
    tens of MB; a bomb is 1000:1. The ratio is checked once `ratio_floor` bytes
    have come out, so small answers are never refused for it.

    Attributes:
        max_decoded_size: Bytes a buffered answer may hold once inflated.
        max_expansion_ratio: Inflated bytes per compressed byte.
        ratio_floor: Inflated bytes before the ratio is checked.
    """

    max_decoded_size: int = 512 * 1024 * 1024
    max_expansion_ratio: float = 200.0
    ratio_floor: int = 16 * 1024 * 1024

    def __post_init__(self) -> None:
        if self.max_decoded_size < 1 or self.max_expansion_ratio < 1:
            raise DicomWebUsageError("max_decoded_size and max_expansion_ratio must be >= 1")


DEFAULT_LIMITS = InflateLimits()


def content_encoding(response: httpx.Response) -> str | None:
    """The body's Content-Encoding in lower case; None when it is sent as it is."""
    encoding = response.headers.get("content-encoding", "identity").strip().lower()
    return None if encoding in ("", "identity") else encoding


async def decoded_body(
    response: httpx.Response, description: str, limits: InflateLimits | None = None
) -> AsyncIterator[bytes]:
    """The response body in pieces, inflated in bounded steps (within `limits`, if given).

    Raises:
        UnexpectedResponseError: an unknown or corrupt encoding, a body cut short,
            or one that inflates past `limits`.
    """
    try:
        preloaded = response.content  # a body built in memory (tests, MockTransport)
    except httpx.ResponseNotRead:
        pass
    else:
        yield preloaded
        return
    encoding = content_encoding(response)
    if encoding is None:
        async for chunk in response.aiter_raw():
            yield chunk
        return
    if encoding not in ("gzip", "x-gzip", "deflate"):
        raise UnexpectedResponseError(f"{description}: unsupported Content-Encoding {encoding!r}")
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS if "gzip" in encoding else zlib.MAX_WBITS)
    taken = given = 0
    try:
        async for chunk in response.aiter_raw():
            data, taken = chunk, taken + len(chunk)
            while data:
                piece = inflater.decompress(data, _PIECE)
                data = inflater.unconsumed_tail
                given += len(piece)
                if limits is not None:
                    _check(limits, given, taken - len(data), description)
                yield piece
    except zlib.error as error:
        raise UnexpectedResponseError(
            f"{description}: corrupt {encoding} body ({error})"
        ) from None
    if rest := inflater.flush():
        yield rest
    if not inflater.eof:  # zlib does not complain about a stream cut short
        raise UnexpectedResponseError(f"{description}: {encoding} body cut short")


def _check(limits: InflateLimits, given: int, taken: int, description: str) -> None:
    if given > limits.max_decoded_size:
        raise UnexpectedResponseError(
            f"{description}: the answer inflates past {limits.max_decoded_size} bytes "
            "(max_decoded_size)"
        )
    if given > limits.ratio_floor and given > limits.max_expansion_ratio * max(taken, 1):
        raise UnexpectedResponseError(
            f"{description}: the answer inflates more than {limits.max_expansion_ratio:g}:1, "
            "as a compression bomb does (max_expansion_ratio)"
        )


async def read_body(
    response: httpx.Response,
    description: str,
    limits: InflateLimits = DEFAULT_LIMITS,
    most: int | None = None,
) -> bytes:
    """The whole body inflated within `limits`, or its first `most` bytes only."""
    collected = bytearray()
    async for piece in decoded_body(response, description, limits):
        collected += piece
        if most is not None and len(collected) >= most:
            return bytes(collected[:most])
    return bytes(collected)
