"""Stream the document out of a FHIR `Binary` resource without holding it in memory.

A GP Connect document arrives as JSON, `{"resourceType": "Binary", "contentType": "...",
"content": "<base64>"}` (STU3 calls the field `content`, R4 calls it `data`). No JSON library
yields a long string value in pieces, so this module scans the body itself, a chunk at a time,
and decodes the base64 as it arrives. Memory stays proportional to the chunk size, never to
the document.

    decoder = decode(response.iter_bytes())
    for piece in decoder:            # document bytes, as they arrive
        ...
    decoder.content_type             # known once the `contentType` field has been read

The scanner checks the whole body: it must be one JSON object with `resourceType` "Binary" and
exactly one of `content`/`data`, holding valid, padded base64. Other fields, however deeply
nested, are checked as JSON and skipped. Any fault raises `BinaryDecodeError`. Every group of
four base64 characters is validated before its bytes are handed out, so the bytes yielded are
always a correct prefix of the document; faults that can only be seen later (the body is cut
short, `resourceType` comes after the data and is wrong, trailing garbage) raise at that point,
and the caller must then discard what it received.

The base64 string may contain JSON escapes that decode to base64 characters or whitespace
(`\\/`, `\\u002B` from .NET, `\\n` line breaks, ...), and literal whitespace. Chunks without
escapes are decoded straight from the chunk with `pybase64` (SIMD); escaped stretches are first
unescaped by the standard library's JSON string scanner.
"""

from __future__ import annotations

import json
import json.decoder
import re
from collections.abc import Callable, Iterable, Iterator
from typing import NoReturn

import pybase64

from gpconnect.errors import BinaryDecodeError

__all__ = ["BinaryDecoder", "BinaryScanner", "decode"]

_BASE64_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
_BASE64_AND_PAD = _BASE64_ALPHABET + b"="
_BASE64_AND_PAD_SET = frozenset(_BASE64_AND_PAD)
_WHITESPACE = b" \t\r\n"
_WHITESPACE_SET = frozenset(_WHITESPACE)
_HEX_SET = frozenset(b"0123456789abcdefABCDEF")
_SIMPLE_ESCAPES = frozenset(b'"\\/bfnrt')
_SCALAR_CHARS = frozenset(b"0123456789+-.abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
_SCALAR = re.compile(rb"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?|true|false|null")
_BOM = b"\xef\xbb\xbf"
# The standard library's JSON string scanner (in C where available), the one `json` uses.
_scanstring: Callable[[str, int, bool], tuple[str, int]]
_scanstring = json.decoder.scanstring  # type: ignore[attr-defined]
_QUOTE, _LOWER_U, _PAD = 0x22, 0x75, 0x3D

# Bounds on what is buffered outside the document content, so a hostile body cannot make us
# hold much: names of top-level fields, the captured string fields, scalars and nesting depth.
_MAX_KEY = 64
_MAX_CAPTURED = 8192
_MAX_SCALAR = 512
_MAX_DEPTH = 256

# Scanner modes.
_BOM_OR_START, _STRUCTURE, _STRING, _SCALAR_TOKEN, _CONTENT, _DONE, _FAILED = range(7)
# What the innermost container expects next.
_OBJ_FIRST, _OBJ_KEY, _OBJ_COLON, _OBJ_VALUE, _OBJ_NEXT = range(5)
_ARR_FIRST, _ARR_VALUE, _ARR_NEXT = range(5, 8)
# The string being scanned: a top-level field name, a captured value, or one to skip.
_KEY, _CAPTURE, _SKIP = range(3)

_DATA_FIELDS = ("content", "data")
_CAPTURED_FIELDS = ("resourceType", "id", "contentType")


class BinaryScanner:
    """Push-style decoder: `feed()` each chunk of the body, then `close()`.

    `feed` returns the document bytes decoded from that chunk (often empty); `close` raises
    `BinaryDecodeError` if the body was incomplete. After an error the scanner is unusable.
    """

    def __init__(self) -> None:
        self.content_type: str | None = None
        self.resource_id: str | None = None
        self.resource_type: str | None = None
        self.data_field: str | None = None  # "content" (STU3) or "data" (R4) once seen
        self.bytes_decoded = 0

        self._mode = _BOM_OR_START
        self._received = 0
        self._bom_matched = 0
        self._stack: list[int] = []
        self._key: str | None = None
        self._seen: set[str] = set()
        self._error: BinaryDecodeError | None = None
        # string scanning
        self._string_kind = _SKIP
        self._escape = 0  # 0: none; -1: after a backslash; n > 0: hex digits still to come
        self._captured = bytearray()
        self._capture_overflow = False
        self._token = bytearray()
        # base64 content
        self._leftover = b""  # at most 3 base64 characters not yet decodable
        self._padded = False
        self._chars = 0  # base64 characters accepted so far, for error positions
        self._pending_escape = b""  # an escape cut by a chunk boundary
        self._escaped = False  # the last chunk of content held escapes

    # -- public interface ------------------------------------------------------------------

    def feed(self, chunk: bytes) -> bytes:
        """Scan the next chunk of the body and return the document bytes it completed."""
        pieces = self.feed_pieces(chunk)
        if len(pieces) == 1:
            return pieces[0]
        return b"".join(pieces)

    def feed_pieces(self, chunk: bytes) -> list[bytes]:
        """Like `feed`, but return the decoded bytes as a list of non-empty pieces (no join)."""
        if self._error is not None:
            raise BinaryDecodeError(f"The Binary decoder already failed: {self._error.message}")
        buf = chunk if type(chunk) is bytes else bytes(chunk)
        out: list[bytes] = []
        try:
            self._scan(buf, out)
        except BinaryDecodeError as error:
            self._mode = _FAILED
            self._error = error
            raise
        self._received += len(buf)
        return out

    def close(self) -> None:
        """Declare the body complete; raise `BinaryDecodeError` if it was not."""
        if self._error is not None:
            raise BinaryDecodeError(f"The Binary decoder already failed: {self._error.message}")
        if self._mode == _DONE:
            return
        if self._mode == _CONTENT:
            message = (
                f"The response ended inside the base64 document content, after "
                f"{self.bytes_decoded} decoded bytes: the download was cut short."
            )
        elif self._mode == _BOM_OR_START:
            message = (
                "The response body is empty."
                if self._received == 0
                else "The response body holds no JSON, only whitespace."
            )
        else:
            where = "after" if self.data_field is not None else "before"
            message = (
                f"The response ended before the Binary resource's JSON object was closed "
                f"({where} the document content): the download was cut short."
            )
        self._fail(message)

    # -- the scan --------------------------------------------------------------------------

    def _scan(self, buf: bytes, out: list[bytes]) -> None:
        i, n = 0, len(buf)
        while i < n:
            mode = self._mode
            if mode == _CONTENT:
                i = self._content(buf, i, out)
            elif mode == _STRUCTURE:
                i = self._structure(buf, i)
            elif mode == _STRING:
                i = self._string(buf, i)
            elif mode == _SCALAR_TOKEN:
                i = self._scalar(buf, i)
            elif mode == _BOM_OR_START:
                i = self._start(buf, i)
            else:  # _DONE
                rest = buf[i:].strip(_WHITESPACE)
                if rest:
                    self._fail(
                        f"The response has unexpected data after the end of the Binary "
                        f"resource: {_snippet(rest)}."
                    )
                return

    def _fail(self, message: str) -> NoReturn:
        self._mode = _FAILED
        self._error = BinaryDecodeError(message)
        raise self._error

    def _start(self, buf: bytes, i: int) -> int:
        n = len(buf)
        while i < n:
            c = buf[i]
            if self._bom_matched < 3 and self._received + i == self._bom_matched:
                if c == _BOM[self._bom_matched]:
                    self._bom_matched += 1
                    i += 1
                    continue
                if self._bom_matched:
                    self._fail("The response body starts with a damaged byte order mark.")
            if c in _WHITESPACE_SET:
                i += 1
                continue
            if c == 0x7B:  # {
                self._stack.append(_OBJ_FIRST)
                self._mode = _STRUCTURE
                return i + 1
            if c == 0x5B:
                what = "a JSON array, not a JSON object"
            elif c in b'"-0123456789tfn':
                what = "a JSON value that is not an object"
            else:
                what = "not JSON"
            self._fail(
                f"The response body is {what}, so it is not a FHIR Binary resource: it starts "
                f"{_snippet(buf[i:])}."
            )
        return i

    def _structure(self, buf: bytes, i: int) -> int:
        """Scan JSON punctuation between values until a string, scalar or the content starts."""
        n = len(buf)
        stack = self._stack
        while i < n:
            c = buf[i]
            if c in _WHITESPACE_SET:
                i += 1
                continue
            state = stack[-1]
            if state in (_OBJ_VALUE, _ARR_VALUE, _ARR_FIRST):
                if state == _ARR_FIRST and c == 0x5D:  # ]
                    i += 1
                    self._close_container()
                    if self._mode != _STRUCTURE:
                        return i
                    continue
                stack[-1] = _OBJ_NEXT if state == _OBJ_VALUE else _ARR_NEXT
                i = self._begin_value(buf, i, c)
                if self._mode != _STRUCTURE:
                    return i
                continue
            if state in (_OBJ_FIRST, _OBJ_KEY):
                if c == _QUOTE:
                    stack[-1] = _OBJ_COLON
                    self._begin_string(_KEY if len(stack) == 1 else _SKIP)
                    return i + 1
                if c == 0x7D and state == _OBJ_FIRST:  # }
                    i += 1
                    self._close_container()
                    if self._mode != _STRUCTURE:
                        return i
                    continue
                self._unexpected(buf, i, "a field name in quotes")
            elif state == _OBJ_COLON:
                if c != 0x3A:  # :
                    self._unexpected(buf, i, "':' after a field name")
                stack[-1] = _OBJ_VALUE
                i += 1
            elif state == _OBJ_NEXT:
                if c == 0x2C:  # ,
                    stack[-1] = _OBJ_KEY
                    i += 1
                elif c == 0x7D:  # }
                    i += 1
                    self._close_container()
                    if self._mode != _STRUCTURE:
                        return i
                else:
                    self._unexpected(buf, i, "',' or '}' after a value in an object")
            else:  # _ARR_NEXT
                if c == 0x2C:
                    stack[-1] = _ARR_VALUE
                    i += 1
                elif c == 0x5D:
                    i += 1
                    self._close_container()
                    if self._mode != _STRUCTURE:
                        return i
                else:
                    self._unexpected(buf, i, "',' or ']' after a value in an array")
        return i

    def _unexpected(self, buf: bytes, i: int, expected: str) -> NoReturn:
        self._fail(
            f"The Binary resource is not valid JSON: expected {expected} but found "
            f"{_snippet(buf[i:])}."
        )

    def _begin_value(self, buf: bytes, i: int, c: int) -> int:
        stack = self._stack
        key = self._key if len(stack) == 1 else None
        if key in _DATA_FIELDS:
            if c != _QUOTE:
                self._fail(f"The Binary resource's '{key}' element is not a base64 string.")
            if self.data_field is not None:
                if self.data_field == key:
                    self._fail(f"The Binary resource has more than one '{key}' element.")
                self._fail(
                    "The Binary resource has both a 'content' (STU3) and a 'data' (R4) "
                    "element, so it is not clear which one holds the document."
                )
            self.data_field = key
            self._mode = _CONTENT
            return i + 1
        if key in _CAPTURED_FIELDS:
            if c != _QUOTE:
                self._fail(f"The Binary resource's '{key}' element is not a string.")
            if key in self._seen:
                self._fail(f"The Binary resource has more than one '{key}' element.")
            self._seen.add(key)
            self._begin_string(_CAPTURE)
            return i + 1
        if c == _QUOTE:
            self._begin_string(_SKIP)
            return i + 1
        if c == 0x7B or c == 0x5B:
            if len(stack) >= _MAX_DEPTH:
                self._fail(f"The Binary resource nests JSON deeper than {_MAX_DEPTH} levels.")
            stack.append(_OBJ_FIRST if c == 0x7B else _ARR_FIRST)
            return i + 1
        if c in _SCALAR_CHARS:
            self._token.clear()
            self._mode = _SCALAR_TOKEN
            return i
        self._unexpected(buf, i, "a JSON value")

    def _close_container(self) -> None:
        self._stack.pop()
        if self._stack:
            return
        self._mode = _DONE
        if self.data_field is None:
            self._fail(
                "The Binary resource has no 'content' (STU3) or 'data' (R4) element, "
                "so there is no document in it."
            )
        if self.resource_type is None:
            self._fail("The response is not a FHIR resource: it has no 'resourceType'.")

    # -- strings and scalars outside the content -------------------------------------------

    def _begin_string(self, kind: int) -> None:
        self._mode = _STRING
        self._string_kind = kind
        self._escape = 0
        self._captured.clear()
        self._capture_overflow = False

    def _string(self, buf: bytes, i: int) -> int:
        n = len(buf)
        capture = self._string_kind != _SKIP
        while i < n:
            escape = self._escape
            if escape:
                c = buf[i]
                if escape < 0:
                    if c == _LOWER_U:
                        self._escape = 4
                    elif c in _SIMPLE_ESCAPES:
                        self._escape = 0
                    else:
                        self._fail(
                            f"The Binary resource is not valid JSON: a string holds the "
                            f"invalid escape '\\{chr(c)}'."
                        )
                elif c in _HEX_SET:
                    self._escape = escape - 1
                else:
                    self._fail(
                        "The Binary resource is not valid JSON: a '\\u' escape in a string "
                        "is not followed by four hex digits."
                    )
                if capture:
                    self._capture(buf[i : i + 1])
                i += 1
                continue
            quote = buf.find(b'"', i)
            end = n if quote < 0 else quote
            backslash = buf.find(b"\\", i, end)
            if backslash >= 0:
                if capture:
                    self._capture(buf[i : backslash + 1])
                self._escape = -1
                i = backslash + 1
                continue
            if capture:
                self._capture(buf[i:end])
            if quote < 0:
                return n
            self._end_string()
            return quote + 1
        return i

    def _capture(self, piece: bytes) -> None:
        if self._capture_overflow:
            return
        limit = _MAX_KEY if self._string_kind == _KEY else _MAX_CAPTURED
        if len(self._captured) + len(piece) > limit:
            if self._string_kind == _KEY:
                self._capture_overflow = True  # a long name is simply an unknown field
                return
            self._fail(
                f"The Binary resource's '{self._key}' element is longer than {_MAX_CAPTURED} bytes."
            )
        self._captured += piece

    def _end_string(self) -> None:
        self._mode = _STRUCTURE
        kind = self._string_kind
        if kind == _SKIP:
            return
        if kind == _KEY:
            self._key = None if self._capture_overflow else self._json_string()
            return
        value = self._json_string()
        if self._key == "resourceType":
            self.resource_type = value
            if value != "Binary":
                self._fail(
                    f"Expected a FHIR Binary resource, but the response is a "
                    f"{value[:64]!r} resource."
                )
        elif self._key == "id":
            self.resource_id = value
        else:
            self.content_type = value

    def _json_string(self) -> str:
        raw = bytes(self._captured)
        if b"\\" not in raw:
            try:
                return raw.decode("utf-8")
            except UnicodeDecodeError:
                self._fail("The Binary resource is not valid JSON: a string is not UTF-8.")
        try:
            value = json.loads(b'"' + raw + b'"')
        except ValueError:
            self._fail("The Binary resource is not valid JSON: a string is malformed.")
        assert isinstance(value, str)
        return value

    def _scalar(self, buf: bytes, i: int) -> int:
        n = len(buf)
        token = self._token
        start = i
        while i < n and buf[i] in _SCALAR_CHARS:
            i += 1
        token += buf[start:i]
        if len(token) > _MAX_SCALAR:
            self._fail(f"The Binary resource holds a JSON number longer than {_MAX_SCALAR}.")
        if i < n:  # the delimiter is scanned as structure
            if _SCALAR.fullmatch(token) is None:
                self._fail(
                    f"The Binary resource is not valid JSON: {_snippet(bytes(token))} is not "
                    f"a JSON value."
                )
            self._mode = _STRUCTURE
        return i

    # -- the base64 content ----------------------------------------------------------------

    def _content(self, buf: bytes, i: int, out: list[bytes]) -> int:
        n = len(buf)
        if self._pending_escape:
            i = self._complete_escape(buf, i, out)
            if self._pending_escape:
                return n
        # Most chunks are nothing but base64. Decoding them with validation proves that (a quote
        # or a backslash is not base64) and saves scanning the chunk for either first.
        if (
            i < n
            and not self._padded
            and not self._escaped
            and self._decode_pure(memoryview(buf)[i:], out)
        ):
            return n
        quote = buf.find(b'"', i)
        stop = n if quote < 0 else quote
        if i < stop:
            self._escaped = buf.find(b"\\", i, stop) >= 0
            if not self._escaped:
                self._base64(memoryview(buf)[i:stop], out)
            else:
                segment = buf[i:stop]
                if quote < 0:
                    # Keep an escape cut by the end of the chunk for the next chunk.
                    last = segment.rfind(b"\\")
                    tail = len(segment) - last
                    if tail == 1 or (tail < 6 and segment[last + 1] == _LOWER_U):
                        self._pending_escape = segment[last:]
                        segment = segment[:last]
                text = self._unescape(segment)
                if text:
                    self._base64(text, out)
        if quote < 0:
            return n
        self._end_content()
        return quote + 1

    def _complete_escape(self, buf: bytes, i: int, out: list[bytes]) -> int:
        pending = self._pending_escape
        n = len(buf)
        while i < n and (len(pending) == 1 or (pending[1] == _LOWER_U and len(pending) < 6)):
            pending += buf[i : i + 1]
            i += 1
        if len(pending) == 1 or (pending[1] == _LOWER_U and len(pending) < 6):
            self._pending_escape = pending
            return i
        self._pending_escape = b""
        text = self._unescape_exact(pending)
        if text:
            self._base64(text, out)
        return i

    def _unescape(self, segment: bytes) -> bytes:
        """Resolve the JSON escapes in a piece of the base64 string.

        The piece starts where an escape may start and holds only whole escapes, so the
        standard library's JSON string scanner decodes it exactly, in C. What it refuses (or
        what is not ASCII) is resolved again by `_unescape_exact`, which says what is wrong.
        """
        try:
            text, _ = _scanstring(segment.decode("ascii") + '"', 0, False)
            return text.encode("ascii")
        except ValueError:  # also UnicodeDecodeError, UnicodeEncodeError, JSONDecodeError
            return self._unescape_exact(segment)

    def _unescape_exact(self, segment: bytes) -> bytes:
        """Resolve escapes one by one, failing with a specific message on the first fault."""
        parts = segment.split(b"\\")
        out = [parts[0]]
        for part in parts[1:]:
            if not part:
                self._fail(
                    "The base64 document content holds a backslash character, which is not base64."
                )
            kind = part[0]
            if kind == _LOWER_U:
                digits = part[1:5]
                if len(digits) < 4 or not all(c in _HEX_SET for c in digits):
                    self._fail(
                        "The base64 document content is not valid JSON: a '\\u' escape is not "
                        "followed by four hex digits."
                    )
                code = int(digits, 16)
                if code in _BASE64_AND_PAD_SET:
                    out.append(bytes((code,)))
                elif code not in _WHITESPACE_SET:
                    self._fail(
                        f"The base64 document content holds the escape "
                        f"'\\u{digits.decode()}' ({chr(code)!r}), which is not base64."
                    )
                out.append(part[5:])
            elif kind == 0x2F:  # \/
                out.append(b"/")
                out.append(part[1:])
            elif kind in b"nrt":
                out.append(part[1:])
            elif kind == _QUOTE:
                self._fail(
                    "The base64 document content holds an escaped quote, which is not base64."
                )
            elif kind in b"bf":
                self._fail(
                    "The base64 document content holds a control character, which is not base64."
                )
            else:
                self._fail(
                    f"The base64 document content is not valid JSON: it holds the invalid "
                    f"escape '\\{chr(kind)}'."
                )
        return b"".join(out)

    def _base64(self, run: bytes | memoryview, out: list[bytes]) -> None:
        """Decode a run of base64 text, carrying at most 3 characters to the next run."""
        if self._padded or not self._decode_pure(run, out):
            self._base64_slow(bytes(run), out)

    def _decode_pure(self, run: bytes | memoryview, out: list[bytes]) -> bool:
        """Decode `run` if it is pure base64 (no whitespace) and return True; else change nothing."""
        leftover = self._leftover
        data = memoryview(leftover + run if leftover else run)
        size = len(data)
        whole = size & ~3
        try:
            decoded: bytes = pybase64.b64decode(data[:whole], validate=True)
        except ValueError:
            return False
        padded = whole > 0 and data[whole - 1] == _PAD
        rest = data[whole:].tobytes() if whole != size else b""
        if rest and (padded or rest.translate(None, _BASE64_ALPHABET)):
            return False
        self._leftover = rest
        self._chars += len(run)
        self._padded = padded
        if decoded:
            out.append(decoded)
            self.bytes_decoded += len(decoded)
        return True

    def _base64_slow(self, run: bytes, out: list[bytes]) -> None:
        """Drop whitespace, then decode or explain exactly what is wrong with the base64."""
        text = run.translate(None, _WHITESPACE)
        if not text or (not self._padded and self._decode_pure(text, out)):
            return
        bad = text.translate(None, _BASE64_AND_PAD)
        if bad:
            at = self._chars + text.index(bad[:1])
            self._fail(
                f"The base64 document content holds the character {_describe(bad[0])} at "
                f"base64 position {at}, which is not base64."
            )
        if self._padded:
            self._fail(
                f"The base64 document content continues after its '=' padding (at base64 "
                f"position {self._chars})."
            )
        data = self._leftover + text
        start = self._chars - len(self._leftover)  # position of data[0]
        whole = len(data) - (len(data) & 3)
        pad = data.find(b"=")
        if pad >= 0:
            self._check_padding(data, pad, start)
        try:
            decoded: bytes = pybase64.b64decode(data[:whole], validate=True)
        except ValueError:
            self._fail(f"The base64 document content is invalid near base64 position {start}.")
        self._leftover = data[whole:]
        self._chars += len(text)
        if pad >= 0 and pad < whole:
            self._padded = True
        if decoded:
            out.append(decoded)
            self.bytes_decoded += len(decoded)

    def _check_padding(self, data: bytes, pad: int, start: int) -> None:
        quantum_end = pad - (pad & 3) + 4
        if pad & 3 < 2:
            self._fail(
                f"The base64 document content has impossible padding: '=' at base64 position "
                f"{start + pad} is only the character {(pad & 3) + 1} of a group of four."
            )
        if pad & 3 == 2 and pad + 1 < len(data) and data[pad + 1] != _PAD:
            self._fail(
                f"The base64 document content has impossible padding: a single '=' at base64 "
                f"position {start + pad} is followed by data."
            )
        if len(data) > quantum_end:
            self._fail(
                f"The base64 document content continues after its '=' padding (at base64 "
                f"position {start + quantum_end})."
            )

    def _end_content(self) -> None:
        if self._leftover:
            self._fail(
                f"The base64 document content ends with an incomplete group of "
                f"{len(self._leftover)} character(s): its '=' padding is missing or it was "
                f"cut short."
            )
        self._mode = _STRUCTURE


class BinaryDecoder:
    """An iterator of document bytes decoded from an iterable of body chunks; see `decode`."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self.scanner = BinaryScanner()
        self._chunks = chunks
        self._pieces = self._run()

    @property
    def content_type(self) -> str | None:
        """The `contentType` element, once read (it may only come after the data)."""
        return self.scanner.content_type

    @property
    def resource_id(self) -> str | None:
        return self.scanner.resource_id

    @property
    def bytes_decoded(self) -> int:
        return self.scanner.bytes_decoded

    def __iter__(self) -> BinaryDecoder:
        return self

    def __next__(self) -> bytes:
        return next(self._pieces)

    def _run(self) -> Iterator[bytes]:
        scanner = self.scanner
        for chunk in self._chunks:
            yield from scanner.feed_pieces(chunk)
        scanner.close()


def decode(chunks: Iterable[bytes]) -> BinaryDecoder:
    """Decode the document in a FHIR Binary JSON body that arrives as `chunks` of any size.

    Iterating the result yields the document's bytes as they are decoded; it raises
    `BinaryDecodeError` as soon as the body is found to be wrong (at the latest, at its end).
    """
    return BinaryDecoder(chunks)


def _snippet(data: bytes, limit: int = 24) -> str:
    text = data[:limit].decode("utf-8", "replace")
    return repr(text + ("..." if len(data) > limit else ""))


def _describe(byte: int) -> str:
    if 0x20 < byte < 0x7F:
        return f"{chr(byte)!r}"
    return f"0x{byte:02X}"
