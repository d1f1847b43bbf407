"""multipart/related for DICOMweb: a sans-IO streaming parser and a streaming encoder.

The parser consumes bytes and returns events (``PartStarted``, ``PartData``,
``PartEnded``); it never reads a socket or a file, so it is tested with bytes
alone at every split point. Body bytes come out as ``memoryview`` slices of the
chunk that was fed, without copying. A part with a ``Content-Length`` header is
handed out by counting and its trailing delimiter is verified; a part without one
is scanned with ``bytes.find``, holding back at most one delimiter's worth of
bytes between chunks, so the work is linear in the body size.

The encoder produces the framing of a STOW-RS request (delimiters and part
headers) so that part bodies can be streamed from files without ever building
the whole request in memory.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import TypeAlias

from aiodicomweb._exceptions import DicomWebUsageError, MultipartError
from aiodicomweb._media import ContentType
from aiodicomweb._validate import positive_integer

__all__ = [
    "Event",
    "MultipartEncoder",
    "MultipartParser",
    "PartData",
    "PartEnded",
    "PartStarted",
    "encode_multipart",
    "multipart_boundary",
    "new_boundary",
]

_MAX_BOUNDARY_LENGTH = 70  # RFC 2046, section 5.1.1

_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_HEADER_LINE = re.compile(rb"([!#$%&'*+.^_`|~0-9A-Za-z-]+)[ \t]*:[ \t]*([^\r\n]*?)[ \t]*")
_BCHARS = re.compile(r"[0-9A-Za-z'()+_,\-./:=? ]{0,69}[0-9A-Za-z'()+_,\-./:=?]")
_PRINTABLE = re.compile(r"[\x20-\x7e]*")


def multipart_boundary(content_type: ContentType) -> bytes:
    """Return the boundary of a ``multipart/*`` content type, checked against RFC 2046.

    Args:
        content_type: A parsed response Content-Type.

    Returns:
        The boundary as ASCII bytes, ready for `MultipartParser`.

    Raises:
        MultipartError: Not multipart, or the boundary is missing, empty, longer
            than 70 characters or not printable ASCII (``offset`` is 0).
    """
    if not content_type.media_type.startswith("multipart/"):
        raise MultipartError(
            f"expected a multipart/* body, got {content_type.media_type!r}", offset=0
        )
    boundary = content_type.boundary
    if boundary is None:
        raise MultipartError("multipart Content-Type has no boundary parameter", offset=0)
    problem = _boundary_problem(boundary.encode("utf-8", "replace"))
    if problem is not None:
        raise MultipartError(f"multipart {problem}", offset=0)
    return boundary.encode("ascii")


# --------------------------------------------------------------------------- parser events


@dataclass(frozen=True, slots=True)
class PartStarted:
    """The headers of a new part have been read.

    Attributes:
        headers: ``(name, value)`` pairs in the order sent, names as sent,
            decoded as latin-1.
        content_length: The part's ``Content-Length``, if it sent one.
    """

    headers: tuple[tuple[str, str], ...]
    content_length: int | None = None

    def header(self, name: str) -> str | None:
        """Return the first header called ``name`` (case-insensitive), or ``None``."""
        wanted = name.lower()
        for key, value in self.headers:
            if key.lower() == wanted:
                return value
        return None


@dataclass(frozen=True, slots=True)
class PartData:
    """A piece of the current part's body.

    Attributes:
        data: A view into the chunk given to `MultipartParser.feed` (or, for a few
            bytes held back from the previous chunk, a small copy). Valid until the
            next ``feed()``; copy it (``bytes(data)``) to keep it longer. A view
            keeps the fed buffer alive and, for a ``bytearray``, stops it resizing.
    """

    data: memoryview


@dataclass(frozen=True, slots=True)
class PartEnded:
    """The current part is complete: its closing delimiter has been seen."""


Event: TypeAlias = PartStarted | PartData | PartEnded
_PART_ENDED = PartEnded()  # immutable and field-less: one instance serves every part

# --------------------------------------------------------------------------- parser

_PREAMBLE, _HEAD, _COUNT, _VERIFY, _SCAN, _DONE, _FAILED, _CLOSED = range(8)
_HEAD_STEP = 1024  # bytes copied at a time while looking for the end of part headers
_PREAMBLE_STEP = 4096  # bytes copied at a time while looking for the first delimiter


class MultipartParser:
    """Incremental multipart/related parser (RFC 2046), sans-IO.

    Feed it the body as it arrives; each call returns the events completed by
    that chunk. Call `close` at the end of the body: only the closing
    ``--boundary--`` proves that nothing was lost.

    Offsets in errors are absolute byte positions in the body. The header limit
    counts every byte between a boundary and the end of the blank line after
    the part's headers.

    Example:
        ```python
        parser = MultipartParser(boundary)
        async for chunk in response.aiter_raw():
            for event in parser.feed(chunk):
                ...
        parser.close()
        ```
    """

    __slots__ = (
        "_body_start",
        "_buf",
        "_buf_offset",
        "_delim",
        "_error",
        "_hay",
        "_head_offset",
        "_line_ok",
        "_max_header_size",
        "_max_headers",
        "_max_part_size",
        "_max_preamble_size",
        "_offset",
        "_part_length",
        "_part_size",
        "_parts_completed",
        "_remaining",
        "_state",
    )

    def __init__(
        self,
        boundary: bytes | str,
        *,
        max_header_size: int = 16384,
        max_headers: int = 64,
        max_preamble_size: int = 65536,
        max_part_size: int | None = None,
    ) -> None:
        """Create a parser for one body.

        Args:
            boundary: The boundary from the Content-Type (see `multipart_boundary`).
            max_header_size: Largest header block of one part, in bytes.
            max_headers: Most header lines in one part.
            max_preamble_size: Most bytes accepted before the first delimiter.
            max_part_size: Largest part body in bytes, or ``None`` for no limit.

        Raises:
            DicomWebUsageError: The boundary is empty, longer than 70 bytes or not
                printable ASCII, or a limit is not positive.
        """
        self._delim = b"\r\n--" + _boundary_bytes(boundary)
        self._max_header_size = positive_integer("max_header_size", max_header_size)
        self._max_headers = positive_integer("max_headers", max_headers)
        self._max_preamble_size = positive_integer(
            "max_preamble_size", max_preamble_size, minimum=0
        )
        self._max_part_size = (
            None
            if max_part_size is None
            else positive_integer("max_part_size", max_part_size, minimum=0)
        )
        self._state = _PREAMBLE
        # The body may open with "--boundary" without a CRLF: pretend one came first.
        self._buf = bytearray(b"\r\n")
        self._buf_offset = -2  # absolute offset of self._buf[0]
        self._offset = 0
        self._hay: bytes | bytearray | None = None
        self._head_offset = 0
        self._line_ok = False
        self._body_start = 0
        self._remaining = 0
        self._part_length = 0
        self._part_size = 0
        self._parts_completed = 0
        self._error: MultipartError | None = None

    @property
    def offset(self) -> int:
        """Total bytes consumed so far."""
        return self._offset

    @property
    def complete(self) -> bool:
        """Whether the closing delimiter ``--boundary--`` has been seen."""
        return self._state in (_DONE, _CLOSED)

    @property
    def parts_completed(self) -> int:
        """How many parts have ended."""
        return self._parts_completed

    def feed(self, data: bytes | bytearray | memoryview) -> list[Event]:
        """Consume the next chunk of the body.

        Args:
            data: Any number of bytes. Bytes after the closing delimiter (the
                epilogue) are discarded.

        Returns:
            The events completed by this chunk, in order. `PartData` views are
            only valid until the next call.

        Raises:
            MultipartError: The body is malformed or exceeds a limit; the parser
                stays failed. Also raised when feeding after `close`.
        """
        view = memoryview(data)
        if view.format != "B" or not view.c_contiguous:  # array('H'), strided views, ...
            view = memoryview(view.tobytes())
        size = len(view)
        state = self._state
        if state == _COUNT and 0 < size < self._remaining:
            # The whole chunk lies inside a counted body: the common case, kept short.
            self._remaining -= size
            self._offset += size
            return [PartData(view)]
        if state >= _DONE:
            return self._feed_after_end(size)
        if type(data) is bytes or type(data) is bytearray:
            self._hay = data  # searchable in place; other buffers are copied once if needed
        try:
            events = self._feed_loop(view)
        except MultipartError as exc:
            self._state = _FAILED
            self._error = exc
            raise
        finally:
            self._hay = None
        self._offset += size
        return events

    def _feed_loop(self, view: memoryview) -> list[Event]:
        events: list[Event] = []
        pos = 0
        end = len(view)
        while pos < end:
            state = self._state
            if state == _SCAN:
                pos = self._scan(view, pos, events)
            elif state == _COUNT:
                pos = self._count(view, pos, events)
            elif state == _HEAD:
                pos = self._head(view, pos, events)
            elif state == _VERIFY:
                pos = self._verify(view, pos, events)
            elif state == _PREAMBLE:
                pos = self._preamble(view, pos)
            else:  # the closing delimiter was seen: the rest is epilogue
                break
        return events

    def close(self) -> list[Event]:
        """Signal the end of the body.

        Returns:
            Remaining events (always empty: events are emitted as soon as known).

        Raises:
            MultipartError: The body ended before its closing delimiter; the
                message says where (preamble, headers or body of which part).
        """
        state = self._state
        if state == _FAILED:
            raise self._reraise()
        if state in (_DONE, _CLOSED):
            self._state = _CLOSED
            return []
        error = MultipartError(self._truncation_message(), offset=self._offset)
        self._state = _FAILED
        self._error = error
        raise error

    # -- states -------------------------------------------------------------------------

    def _feed_after_end(self, size: int) -> list[Event]:
        if self._state == _DONE:
            self._offset += size
            return []
        if self._state == _CLOSED:
            raise MultipartError("feed() called after close()", offset=self._offset)
        raise self._reraise()

    def _reraise(self) -> MultipartError:
        error = self._error
        assert error is not None
        return MultipartError(f"parser failed earlier: {error.message}", offset=error.offset)

    def _preamble(self, view: memoryview, pos: int) -> int:
        """Look for the first delimiter; the preamble before it is discarded."""
        buf = self._buf
        old = len(buf)
        take = min(len(view) - pos, _PREAMBLE_STEP)
        buf += view[pos : pos + take]
        found = buf.find(self._delim)
        limit = self._max_preamble_size
        if found < 0:
            drop = len(buf) - (len(self._delim) - 1)
            if drop > 0:
                del buf[:drop]
                self._buf_offset += drop
            if self._buf_offset > limit:
                raise MultipartError(
                    f"no boundary delimiter in the first {limit} bytes", offset=limit
                )
            return pos + take
        if self._buf_offset + found > limit:
            raise MultipartError(f"no boundary delimiter in the first {limit} bytes", offset=limit)
        used = found + len(self._delim) - old
        self._enter_head(self._offset + pos + used)
        return pos + used

    def _enter_head(self, offset: int) -> None:
        self._state = _HEAD
        self._head_offset = offset
        self._line_ok = False
        self._buf.clear()

    def _head(self, view: memoryview, pos: int, events: list[Event]) -> int:
        """Read the rest of the delimiter line and the part headers after it."""
        buf = self._buf
        old = len(buf)
        take = min(len(view) - pos, self._max_header_size - old, _HEAD_STEP)
        buf += view[pos : pos + take]
        if not self._line_ok and not self._check_delimiter_line():
            if self._state == _HEAD:  # else the closing delimiter: the rest is epilogue
                self._check_head_size()
            return pos + take
        found = buf.find(b"\r\n\r\n", max(0, old - 3))
        if found < 0:
            self._check_head_size()
            return pos + take
        started = self._parse_headers(bytes(buf[:found]))
        events.append(started)
        self._start_body(started.content_length, self._head_offset + found + 4)
        return pos + found + 4 - old

    def _check_head_size(self) -> None:
        limit = self._max_header_size
        if len(self._buf) >= limit:
            raise MultipartError(
                f"part {self._parts_completed + 1} headers exceed {limit} bytes",
                offset=self._head_offset + limit,
            )

    def _check_delimiter_line(self) -> bool:
        """Check the bytes after a boundary: ``--``, or padding then CRLF.

        Returns:
            True once the line is known to end in CRLF; False when more bytes are
            needed or the close delimiter was seen (the state is then ``_DONE``).
        """
        buf = self._buf
        size = len(buf)
        if size and buf[0] == 0x2D:  # "-"
            if size < 2:
                return False
            if buf[1] != 0x2D:
                raise self._garbage(1)
            self._state = _DONE
            return False
        pad = size - len(buf.lstrip(b" \t"))
        if pad == size:
            return False
        if buf[pad] != 0x0D:
            raise self._garbage(pad)
        if pad + 1 == size:
            return False
        if buf[pad + 1] != 0x0A:
            raise self._garbage(pad + 1)
        self._line_ok = True
        return True

    def _garbage(self, index: int) -> MultipartError:
        return MultipartError(
            "expected CRLF or '--' after a boundary delimiter",
            offset=self._head_offset + index,
        )

    def _parse_headers(self, block: bytes) -> PartStarted:
        """Parse a header block: the delimiter line's padding, then header lines."""
        headers: list[tuple[str, str]] = []
        lines = block.split(b"\r\n")
        at = self._head_offset + len(lines[0]) + 2
        length: int | None = None
        for line in lines[1:]:
            if line[:1] in (b" ", b"\t") and headers:  # obsolete line folding
                name, value = headers[-1]
                headers[-1] = (name, value + " " + line.strip(b" \t").decode("latin-1"))
            else:
                match = _HEADER_LINE.fullmatch(line)
                if match is None:
                    raise MultipartError(f"malformed part header line {line[:80]!r}", offset=at)
                if len(headers) == self._max_headers:
                    raise MultipartError(
                        f"part has more than {self._max_headers} headers", offset=at
                    )
                name, value = match.group(1).decode("latin-1"), match.group(2).decode("latin-1")
                headers.append((name, value))
                if name.lower() == "content-length":
                    length = self._content_length(value, length, at)
            at += len(line) + 2
        return PartStarted(tuple(headers), length)

    def _content_length(self, value: str, previous: int | None, at: int) -> int:
        """Validate a part's Content-Length header found at offset ``at``."""
        if not (value.isascii() and value.isdigit()):
            raise MultipartError(f"invalid part Content-Length {value!r}", offset=at)
        length = int(value)
        if previous is not None and previous != length:
            raise MultipartError("conflicting part Content-Length headers", offset=at)
        limit = self._max_part_size
        if limit is not None and length > limit:
            raise MultipartError(
                f"part {self._parts_completed + 1} declares {length} bytes, "
                f"more than max_part_size={limit}",
                offset=at,
            )
        return length

    def _start_body(self, length: int | None, body_start: int) -> None:
        self._buf.clear()
        self._body_start = body_start
        self._part_size = 0
        if length is None:
            self._state = _SCAN
        else:
            self._part_length = self._remaining = length
            self._state = _COUNT if length else _VERIFY

    def _count(self, view: memoryview, pos: int, events: list[Event]) -> int:
        """Hand out body bytes of a part with a Content-Length, without scanning."""
        stop = min(pos + self._remaining, len(view))
        self._remaining -= stop - pos
        if not self._remaining:
            self._state = _VERIFY
        events.append(PartData(view[pos:stop]))
        return stop

    def _verify(self, view: memoryview, pos: int, events: list[Event]) -> int:
        """Check that exactly CRLF--boundary follows a counted body."""
        delim = self._delim
        matched = len(self._buf)
        size = min(len(delim) - matched, len(view) - pos)
        if view[pos : pos + size] != delim[matched : matched + size]:
            got = bytes(view[pos : pos + size])
            index = next(i for i, b in enumerate(got) if b != delim[matched + i])
            raise MultipartError(
                f"part {self._parts_completed + 1} is not followed by a boundary delimiter "
                "after its Content-Length",
                offset=self._offset + pos + index,
            )
        if matched + size < len(delim):
            self._buf += view[pos : pos + size]
        else:
            self._end_part(events, self._offset + pos + size)
        return pos + size

    def _end_part(self, events: list[Event], offset: int) -> None:
        events.append(_PART_ENDED)
        self._parts_completed += 1
        self._enter_head(offset)

    def _scan(self, view: memoryview, pos: int, events: list[Event]) -> int:
        """Hand out body bytes of a part without Content-Length, up to its delimiter.

        The delimiter holds a CR only at its start, so it cannot overlap itself:
        the only bytes worth holding back at the end of a chunk are a suffix that
        starts with the last CR and is a prefix of the delimiter.
        """
        if self._buf:
            resumed = self._resume_scan(view, pos, events)
            if resumed is not None:
                return resumed
        delim = self._delim
        hay = self._hay
        if hay is None:
            hay = self._hay = view.tobytes()
        found = hay.find(delim, pos)
        if found >= 0:
            if found > pos:
                self._emit_scanned(events, view[pos:found])
            self._end_part(events, self._offset + found + len(delim))
            return found + len(delim)
        end = len(view)
        cut = hay.rfind(b"\r", max(pos, end - len(delim) + 1))
        if cut >= 0 and hay.startswith(delim[: end - cut], cut):
            self._buf += view[cut:]
        else:
            cut = end
        if cut > pos:
            self._emit_scanned(events, view if cut - pos == end else view[pos:cut])
        return end

    def _resume_scan(self, view: memoryview, pos: int, events: list[Event]) -> int | None:
        """Continue a delimiter prefix held back from the previous chunk.

        Returns:
            Where to stop, if the held bytes were (or may still be) the delimiter;
            ``None`` if they were body bytes, now emitted.
        """
        buf = self._buf
        held = len(buf)
        delim = self._delim
        size = min(len(delim) - held, len(view) - pos)
        if view[pos : pos + size] == delim[held : held + size]:
            if held + size == len(delim):
                self._end_part(events, self._offset + pos + size)
            else:
                buf += view[pos : pos + size]
            return pos + size
        tail = memoryview(bytes(buf))
        buf.clear()
        self._emit_scanned(events, tail)
        return None

    def _emit_scanned(self, events: list[Event], data: memoryview) -> None:
        limit = self._max_part_size
        if limit is not None:
            self._part_size += len(data)
            if self._part_size > limit:
                raise MultipartError(
                    f"part {self._parts_completed + 1} exceeds max_part_size={limit}",
                    offset=self._body_start + limit,
                )
        events.append(PartData(data))

    def _truncation_message(self) -> str:
        part = self._parts_completed + 1
        state = self._state
        if state == _PREAMBLE:
            return "body ended before the first boundary delimiter"
        if state == _HEAD and not self._buf:
            return f"body ended after a boundary delimiter, before part {part} or the closing '--'"
        if state == _HEAD:
            return f"body ended inside the headers of part {part}"
        if state == _COUNT:
            done = self._part_length - self._remaining
            return (
                f"body ended inside part {part} after {done} of its {self._part_length} bytes "
                "(Content-Length)"
            )
        return f"body ended inside part {part} before its closing delimiter"


def _boundary_bytes(boundary: bytes | str) -> bytes:
    if isinstance(boundary, str):
        boundary = boundary.encode("utf-8", "replace")
    problem = _boundary_problem(boundary)
    if problem is not None:
        raise DicomWebUsageError(problem)
    return bytes(boundary)


def _boundary_problem(boundary: bytes) -> str | None:
    """What makes `boundary` unusable (RFC 2046: 1 to 70 printable ASCII bytes), or None."""
    if not boundary:
        return "boundary is empty"
    if len(boundary) > _MAX_BOUNDARY_LENGTH:
        return f"boundary is {len(boundary)} bytes long; RFC 2046 allows 1 to 70"
    if not all(0x20 <= b <= 0x7E for b in boundary):
        return f"boundary {boundary!r} is not printable ASCII"
    return None


# --------------------------------------------------------------------------- encoder


def new_boundary() -> str:
    """Return a fresh random boundary: 32 hex digits from `secrets` (128 bits)."""
    return secrets.token_hex(16)


class MultipartEncoder:
    """The framing of a multipart/related request body, for streaming STOW-RS.

    The encoder holds no state between calls, so a request body can be rebuilt
    for a retry. A body is ``part_head(first=True)``, the first part's bytes,
    ``part_head()``, the next part's bytes, ..., then ``close_delimiter()``.

    Attributes:
        boundary: The boundary (random unless given).
        part_type: The media type of the parts, the ``type`` parameter.
    """

    __slots__ = ("_close", "_default_head", "boundary", "part_type")

    def __init__(
        self, *, part_type: str = "application/dicom", boundary: str | None = None
    ) -> None:
        """Create an encoder.

        Args:
            part_type: Media type of the parts (``type`` and each part's Content-Type).
            boundary: A boundary to use; a random one by default.

        Raises:
            DicomWebUsageError: The boundary breaks RFC 2046 (1-70 characters from
                its ``bchars`` set, not ending in a space), or ``part_type`` is not
                a printable ASCII header value.
        """
        if boundary is None:
            boundary = new_boundary()
        elif not _BCHARS.fullmatch(boundary):
            raise DicomWebUsageError(f"invalid multipart boundary {boundary!r} (RFC 2046)")
        _check_header_value(part_type)
        self.boundary = boundary
        self.part_type = part_type
        self._close = f"\r\n--{boundary}--\r\n".encode("ascii")
        self._default_head = self._render_head({"Content-Type": part_type})

    @property
    def content_type(self) -> str:
        """The request's Content-Type, with ``type`` and ``boundary`` quoted."""
        return (
            f"multipart/related; type={_quote(self.part_type)}; boundary={_quote(self.boundary)}"
        )

    def part_head(self, headers: Mapping[str, str] | None = None, *, first: bool = False) -> bytes:
        """Return the delimiter, headers and blank line that open a part.

        Args:
            headers: Part headers; ``Content-Type: <part_type>`` is added unless given.
            first: True for the first part of the body, which has no leading CRLF.

        Returns:
            The bytes to send before the part's body.

        Raises:
            DicomWebUsageError: A header name is not a token or a value is not
                printable ASCII.
        """
        head = self._default_head if headers is None else self._render_head(headers)
        return head[2:] if first else head

    def close_delimiter(self) -> bytes:
        """Return ``CRLF--boundary--CRLF``, which ends the body."""
        return self._close

    def _render_head(self, headers: Mapping[str, str]) -> bytes:
        lines = [f"\r\n--{self.boundary}"]
        if not any(name.lower() == "content-type" for name in headers):
            lines.append(f"Content-Type: {self.part_type}")
        for name, value in headers.items():
            if not _TOKEN.fullmatch(name):
                raise DicomWebUsageError(f"invalid part header name {name!r}")
            _check_header_value(value)
            lines.append(f"{name}: {value}")
        lines.append("\r\n")
        return "\r\n".join(lines).encode("ascii")


def encode_multipart(
    parts: Iterable[tuple[Mapping[str, str] | None, Iterable[bytes]]],
    *,
    part_type: str = "application/dicom",
    boundary: str | None = None,
) -> tuple[str, Iterator[bytes]]:
    """Encode parts as a multipart/related body, lazily.

    Args:
        parts: ``(headers, body_chunks)`` pairs; ``headers`` may be ``None``.
            Both ``parts`` and each body are consumed one item at a time, only as
            the returned iterator is advanced.
        part_type: Media type of the parts.
        boundary: A boundary to use; a random one by default.

    Returns:
        The Content-Type header value and an iterator over the body's chunks. With
        no parts at all, the body is only the close delimiter.

    Raises:
        DicomWebUsageError: Invalid boundary, part type or headers (headers are
            checked when their part is reached).
    """
    encoder = MultipartEncoder(part_type=part_type, boundary=boundary)
    return encoder.content_type, _encode_body(encoder, parts)


def _encode_body(
    encoder: MultipartEncoder,
    parts: Iterable[tuple[Mapping[str, str] | None, Iterable[bytes]]],
) -> Iterator[bytes]:
    first = True
    for headers, body in parts:
        yield encoder.part_head(headers, first=first)
        first = False
        for chunk in body:
            if chunk:
                yield chunk
    close = encoder.close_delimiter()
    yield close[2:] if first else close


def _check_header_value(value: str) -> None:
    if not _PRINTABLE.fullmatch(value):
        raise DicomWebUsageError(f"header value {value!r} is not printable ASCII")


def _quote(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'
