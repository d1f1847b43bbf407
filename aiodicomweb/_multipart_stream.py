"""Turn a streamed WADO-RS response into an async iterator of parts.

The glue between httpx's byte stream and the sans-IO multipart parser: one
chunk is fed at a time, and the parser's events are handed out before the next
chunk is read, so memory holds one network chunk, never a part or a series.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import AsyncIterator, Callable

import httpx

from aiodicomweb._exceptions import (
    MultipartError,
    MultipartUnsupportedError,
    translate_httpx_error,
)
from aiodicomweb._inflate import decoded_body
from aiodicomweb._media import DICOM, MULTIPART_RELATED, media_type, parse_content_type
from aiodicomweb._multipart import (
    Event,
    MultipartParser,
    PartData,
    PartEnded,
    PartStarted,
    multipart_boundary,
)

__all__ = ["MultipartStream", "Part"]

logger = logging.getLogger("aiodicomweb")


class Part:
    """One part of a multipart/related response, read as it arrives.

    Attributes:
        headers: The part's own headers (case-insensitive mapping).
        content_type: Its Content-Type, if sent.
        transfer_syntax: The `transfer-syntax` parameter of its Content-Type, if any.
        content_location: Its Content-Location, if sent.
        content_length: Its declared Content-Length, if sent.
        index: Position of the part in the response, from 0.
    """

    def __init__(self, stream: MultipartStream, started: PartStarted, index: int) -> None:
        self._stream = stream
        self.headers = httpx.Headers(list(started.headers))
        self.content_type = self.headers.get("content-type")
        self.transfer_syntax = (
            parse_content_type(self.content_type).param("transfer-syntax")
            if self.content_type
            else None
        )
        self.content_location = self.headers.get("content-location")
        self.content_length = started.content_length
        self.index = index
        self.done = False

    def __repr__(self) -> str:
        return f"<Part {self.index} {self.content_type!r} length={self.content_length}>"

    @property
    def offset(self) -> int:
        """Bytes of the response body parsed so far."""
        return self._stream.offset

    async def aiter_views(self) -> AsyncIterator[memoryview]:
        """The body as zero-copy memoryviews, each valid until the next step."""
        while not self.done:
            event = await self._stream.next_event()
            if isinstance(event, PartData):
                yield event.data
            elif isinstance(event, PartEnded) or event is None:
                self.done = True

    async def aiter_bytes(self) -> AsyncIterator[bytes]:
        """The body as it arrives, in chunks.

        Raises:
            MultipartError: the response was truncated or malformed.
            DicomWebTransportError: the connection failed.
        """
        async for view in self.aiter_views():
            yield bytes(view)

    async def read(self) -> bytes:
        """The whole body of this part (for small parts).

        Raises:
            MultipartError: the response was truncated or malformed.
            DicomWebTransportError: the connection failed.
        """
        return b"".join([bytes(view) async for view in self.aiter_views()])


DEFAULT_MAX_PARTS = 100_000  # instances in one answer: far above any real series


def _accepted(kind: str | None, types: tuple[str, ...]) -> bool:
    """Whether the media type `kind` is one of `types`, which may hold `*/*` or `image/*`."""
    if not kind:
        return False
    kind = kind.lower()
    return kind in types or "*/*" in types or f"{kind.split('/', 1)[0]}/*" in types


class MultipartStream:
    """Async iterator of `Part`s over an open, streamed httpx response.

    A body that is a single `application/dicom` (or other accepted) document
    instead of a multipart one is presented as one part.
    """

    def __init__(
        self,
        response: httpx.Response,
        *,
        description: str,
        single_part_types: tuple[str, ...] = (DICOM,),
        max_parts: int = DEFAULT_MAX_PARTS,
    ) -> None:
        self._response = response
        self._max_parts = max_parts
        self._description = description
        self._events: deque[Event] = deque()
        self._chunks = decoded_body(response, description)
        self._current: Part | None = None
        self._count = 0
        self._exhausted = False
        self._bare_multipart = False  # multipart/related without a boundary: one bare part
        self._sniffed = False  # its first bytes were checked for multipart framing
        self._parser, first = self._choose_parser(single_part_types)
        if first is not None:
            self._events.append(first)

    def _choose_parser(
        self, single_part_types: tuple[str, ...]
    ) -> tuple[MultipartParser | None, PartStarted | None]:
        header = self._response.headers.get("content-type", "")
        kind = media_type(header)
        if kind == MULTIPART_RELATED:
            parsed = parse_content_type(header)
            if parsed.boundary is None and _accepted(parsed.param("type"), single_part_types):
                # Seen from real servers for one frame: a bare body under a multipart type.
                logger.warning("%s: multipart/related without a boundary; read as one part",
                               self._description)  # fmt: skip
                self._bare_multipart = True
                return None, PartStarted(headers=(("Content-Type", parsed.param("type") or ""),))
            return MultipartParser(multipart_boundary(parsed)), None
        if _accepted(kind, single_part_types):
            length = self._response.headers.get("content-length")
            started = PartStarted(
                headers=(("Content-Type", header),),
                content_length=int(length)
                if length and length.isascii() and length.isdigit()
                else None,
            )
            return None, started
        raise MultipartUnsupportedError(
            f"{self._description}: expected multipart/related, got {header or 'no Content-Type'!r}"
        )

    @property
    def offset(self) -> int:
        """Bytes of the body parsed so far (0 for a single, bare part)."""
        return self._parser.offset if self._parser is not None else 0

    def __aiter__(self) -> MultipartStream:
        return self

    async def __anext__(self) -> Part:
        if self._current is not None and not self._current.done:
            async for _ in self._current.aiter_views():
                pass  # skip what the caller did not read
        while True:
            event = await self.next_event()
            if event is None:
                raise StopAsyncIteration
            if isinstance(event, PartStarted):
                if self._count >= self._max_parts:
                    raise MultipartError(
                        f"{self._description}: more than {self._max_parts} parts (max_parts)",
                        offset=self.offset,
                    )
                self._current = Part(self, event, self._count)
                self._count += 1
                return self._current

    async def next_event(self) -> Event | None:
        """The next parser event, reading from the network when none is queued."""
        while not self._events:
            if self._exhausted:
                return None
            chunk = await self._read_chunk()
            if chunk is None:
                self._exhausted = True
                self._events.extend(self._finish())
            elif self._parser is None:
                if self._bare_multipart and not self._sniffed and chunk.startswith(b"--"):
                    raise MultipartError(
                        f"{self._description}: multipart body without a boundary parameter",
                        offset=0,
                    )
                self._sniffed = True
                self._events.append(PartData(memoryview(chunk)))
            else:
                self._events.extend(self._parse(self._parser.feed, chunk))
        return self._events.popleft()

    async def _read_chunk(self) -> bytes | None:
        try:
            return await self._chunks.__anext__()
        except StopAsyncIteration:
            return None
        except httpx.HTTPError as error:
            raise translate_httpx_error(error, self._description) from error

    def _finish(self) -> list[Event]:
        parser = self._parser
        if parser is None:
            return [PartEnded()]
        return self._parse(lambda _: parser.close(), b"")

    def _parse(self, step: Callable[[bytes], list[Event]], chunk: bytes) -> list[Event]:
        try:
            return step(chunk)
        except MultipartError as error:
            # Say which request the body belonged to; the offset stays exact.
            raise MultipartError(
                f"{self._description}: {error.reason}", offset=error.offset
            ) from None
