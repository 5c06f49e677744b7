"""The streaming Binary decoder: the one piece of parsing we write by hand, so it is proven here.

Property-based tests build Binary bodies the way real providers might (field order, STU3
`content` or R4 `data`, escaped `/`, `+` and `=`, line breaks, nested fields) and cut them into
chunks anywhere; the decoded bytes must be exactly the document. A differential test checks
the decoder against `json` + strict `binascii` on base64 strings salted with awkward escapes.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import json
import random
import re
import tracemalloc
import zipfile
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from gpconnect.binary import BinaryDecoder, BinaryScanner, decode
from gpconnect.errors import BinaryDecodeError, InvalidResponse
from tests.fixtures import fixture_bytes

SPEC_EXAMPLE = "documents_binary_response.json"

# -- helpers ------------------------------------------------------------------------------


def chunked(body: bytes, sizes: list[int]) -> Iterator[bytes]:
    """Cut `body` into chunks whose sizes cycle through `sizes`."""
    i, k = 0, 0
    while i < len(body):
        size = sizes[k % len(sizes)]
        yield body[i : i + size]
        i += size
        k += 1


def decode_all(body: bytes, sizes: list[int] | None = None) -> tuple[bytes, BinaryDecoder]:
    decoder = decode(chunked(body, sizes or [len(body) or 1]))
    return b"".join(decoder), decoder


def binary_body(
    encoded: str,
    *,
    field: str = "content",
    content_type: str = "application/pdf",
    before: str = "",
    after: str = "",
) -> bytes:
    text = (
        f'{{"resourceType": "Binary", "id": "doc-1", "contentType": {json.dumps(content_type)},'
        f'{before} "{field}": "{encoded}"{after}}}'
    )
    return text.encode()


def b64(document: bytes) -> str:
    return base64.b64encode(document).decode()


def collect_until_error(body: bytes, sizes: list[int]) -> tuple[bytes, BinaryDecodeError]:
    pieces = []
    with pytest.raises(BinaryDecodeError) as caught:
        for piece in decode(chunked(body, sizes)):
            pieces.append(piece)
    return b"".join(pieces), caught.value


ESCAPES = {
    "/": ["/", "\\/", "\\u002F", "\\u002f"],
    "+": ["+", "\\u002B", "\\u002b"],
    "=": ["=", "\\u003D", "\\u003d"],
}
LINE_BREAKS = ["\\n", "\\r\\n", "\\r", "\\t", " ", "\\u000A", "\\u000d\\u000a", "\\u0020"]

json_leaves = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(alphabet=st.sampled_from('{}[]":,\\/ab \n\t\u00e9\u2603'), max_size=12)
)
json_values = st.recursive(
    json_leaves,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=12,
)


@st.composite
def binary_documents(
    draw: st.DrawFn, max_size: int = 20_000
) -> tuple[bytes, bytes, dict[str, str]]:
    """Return (document, body, expected attributes) for a randomly written Binary body."""
    document = draw(st.binary(max_size=max_size))
    rnd = draw(st.randoms(use_true_random=False))
    field = draw(st.sampled_from(["content", "data"]))
    content_type = draw(st.text(min_size=1, max_size=30))
    resource_id = draw(st.text(alphabet="abcdef0123456789-", min_size=1, max_size=36))

    encoded = b64(document)
    escape_rate = rnd.choice([0.0, 0.5, 1.0])
    characters = [
        rnd.choice(ESCAPES[c][1:]) if c in ESCAPES and rnd.random() < escape_rate else c
        for c in encoded
    ]
    wrap = draw(st.none() | st.integers(min_value=1, max_value=100))
    if wrap:
        line_break = rnd.choice(LINE_BREAKS)
        for position in range(len(characters) - wrap, 0, -wrap):
            characters.insert(position, line_break)
    value = "".join(characters)

    ensure_ascii = draw(st.booleans())
    members = [
        ("resourceType", json.dumps("Binary")),
        ("id", json.dumps(resource_id, ensure_ascii=ensure_ascii)),
        ("contentType", json.dumps(content_type, ensure_ascii=ensure_ascii)),
        (field, f'"{value}"'),
    ]
    extras = draw(
        st.dictionaries(
            st.text(max_size=10).filter(
                lambda k: k not in {"resourceType", "id", "contentType", "content", "data"}
            ),
            json_values,
            max_size=3,
        )
    )
    members += [(key, json.dumps(v, ensure_ascii=ensure_ascii)) for key, v in extras.items()]
    members = draw(st.permutations(members))

    space = draw(st.sampled_from(["", " ", "\n  ", "\r\n\t"]))
    body = (
        draw(st.sampled_from(["", "\ufeff", " \n", "\ufeff\r\n "]))
        + "{"
        + space
        + ("," + space).join(f"{json.dumps(key)}{space}:{space}{v}" for key, v in members)
        + space
        + "}"
        + draw(st.sampled_from(["", "\n", " \r\n"]))
    )
    return document, body.encode(), {"content_type": content_type, "resource_id": resource_id}


chunk_sizes = st.lists(st.integers(min_value=1, max_value=5000), min_size=1, max_size=20)
tiny_chunk_sizes = st.lists(st.integers(min_value=1, max_value=9), min_size=1, max_size=10)


# -- the specification's example ---------------------------------------------------------


def test_the_specification_example_decodes_to_a_complete_docx_although_it_says_msword() -> None:
    body = fixture_bytes(SPEC_EXAMPLE)

    document, decoder = decode_all(body)

    assert decoder.content_type == "application/msword"
    assert decoder.resource_id == "07a6483f-732b-461e-86b6-edb665c45510"
    assert decoder.bytes_decoded == len(document) == 11705
    assert hashlib.sha256(document).hexdigest() == (
        "f4b89acdae90e32fa2808b66343783f00e266f54f3c3aa7123d20e293d8d1563"
    )
    # The base64 is complete and valid: it is a whole Word 2007+ (OOXML zip) document.
    with zipfile.ZipFile(io.BytesIO(document)) as docx:
        assert docx.testzip() is None
        assert "word/document.xml" in docx.namelist()


def test_the_specification_example_split_into_single_bytes_decodes_to_the_same_bytes() -> None:
    body = fixture_bytes(SPEC_EXAMPLE)

    document, _ = decode_all(body, [1])

    assert document == base64.b64decode(json.loads(body)["content"])


# -- the property: any honest body decodes to exactly the document -----------------------


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(binary_documents(), chunk_sizes)
def test_any_binary_body_cut_into_any_chunks_decodes_to_exactly_the_document(
    case: tuple[bytes, bytes, dict[str, str]], sizes: list[int]
) -> None:
    document, body, expected = case

    decoder = decode(chunked(body, sizes))
    digest = hashlib.sha256()
    for piece in decoder:
        assert piece, "the decoder never yields empty pieces"
        digest.update(piece)

    assert digest.hexdigest() == hashlib.sha256(document).hexdigest()
    assert decoder.bytes_decoded == len(document)
    assert decoder.content_type == expected["content_type"]
    assert decoder.resource_id == expected["resource_id"]


@settings(max_examples=150, deadline=None)
@given(binary_documents(max_size=1500), tiny_chunk_sizes)
def test_a_body_cut_into_chunks_of_a_few_bytes_splits_escapes_and_keys_and_still_decodes(
    case: tuple[bytes, bytes, dict[str, str]], sizes: list[int]
) -> None:
    document, body, expected = case

    decoded, decoder = decode_all(body, sizes)

    assert decoded == document
    assert decoder.content_type == expected["content_type"]


def test_a_document_split_into_single_bytes_decodes_to_the_same_bytes() -> None:
    document = random.Random(1).randbytes(3000)
    lines = [b64(document)[i : i + 76] for i in range(0, 4000, 76)]
    encoded = "\\r\\n".join(lines).replace("+", "\\u002B").replace("/", "\\/")
    body = binary_body(encoded, before=' "meta": {"profile": ["a}\\"b{"]},')

    decoded, decoder = decode_all(body, [1])

    assert decoded == document
    assert decoder.content_type == "application/pdf"


# -- differential: the decoder agrees with json + strict binascii ------------------------

SALT = [
    "\\",
    "\\\\",
    "\\n",
    "\\r\\n",
    "\\t",
    "\\/",
    "\\u00",
    "\\u002",
    "\\u002F",
    "\\u002b",
    "\\u003D",
    "\\u0041",
    "\\u0020",
    "\\u005C",
    "\\u005c\\u002F",
    "\\u0022",
    '\\"',
    "\\b",
    "\\f",
    "\\x",
    "\\U002F",
    "=",
    "==",
    "A",
    " ",
    "\r\n",
    "!",
    "\\\\n",
    "\\\\/",
    "\\\\u002F",
]


# RFC 4648 base64: whole groups of four, padding only to complete the last one. (binascii's
# strict mode alone still accepts surplus padding after a complete group, such as "QUJD=".)
CANONICAL_BASE64 = re.compile(r"(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?")
BASE64_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=")


def reference_decode(body: bytes) -> bytes | None:
    """What a careful non-streaming decoder makes of `body`, or None if it must be refused."""
    try:
        resource = json.loads(body, strict=False)
    except ValueError:
        return None
    text = re.sub(r"[ \t\r\n]", "", resource["content"])
    if not CANONICAL_BASE64.fullmatch(text):
        return None
    return binascii.a2b_base64(text.encode("ascii"), strict_mode=True)


def readable_base64_prefix(body: bytes) -> str:
    """The base64 characters at the start of the content string, up to the first fault.

    A deliberately plain, character-at-a-time reading of the JSON string, independent of the
    decoder under test.
    """
    raw = body.decode("utf-8", "replace")
    i = raw.index('"content": "') + len('"content": "')
    simple = {"/": "/", "n": "", "r": "", "t": ""}
    out = []
    while i < len(raw):
        c = raw[i]
        if c == "\\":
            e = raw[i + 1 : i + 2]
            if e in simple:
                out.append(simple[e])
                i += 2
                continue
            digits = raw[i + 2 : i + 6]
            if (
                e != "u"
                or len(digits) < 4
                or any(d not in "0123456789abcdefABCDEF" for d in digits)
            ):
                break
            c = chr(int(digits, 16))
            i += 6
        else:
            i += 1
        if c in " \t\r\n":
            continue
        if c not in BASE64_CHARS:
            break
        out.append(c)
    return "".join(out)


@settings(max_examples=600, deadline=None)
@given(
    st.binary(max_size=60),
    st.lists(st.tuples(st.integers(min_value=0), st.sampled_from(SALT)), max_size=4),
    tiny_chunk_sizes,
)
def test_salted_base64_strings_decode_exactly_as_json_and_strict_base64_say_or_are_refused(
    document: bytes, salt: list[tuple[int, str]], sizes: list[int]
) -> None:
    encoded = b64(document)
    for position, fragment in salt:
        at = position % (len(encoded) + 1)
        encoded = encoded[:at] + fragment + encoded[at:]
    body = binary_body(encoded)
    expected = reference_decode(body)

    for size_list in (sizes, [len(body)]):
        if expected is None:
            prefix, _ = collect_until_error(body, size_list)
            # Whatever was yielded before the refusal is the decoding of whole, valid groups
            # at the start of the string.
            groups = readable_base64_prefix(body)[: -(-len(prefix) // 3) * 4]
            assert CANONICAL_BASE64.fullmatch(groups)
            assert binascii.a2b_base64(groups, strict_mode=True) == prefix
        else:
            decoded, _ = decode_all(body, size_list)
            assert decoded == expected


@settings(max_examples=300, deadline=None)
@given(
    st.binary(min_size=1500, max_size=4000),
    st.randoms(use_true_random=False),
    st.lists(st.tuples(st.integers(min_value=0), st.sampled_from(SALT)), min_size=1, max_size=3),
    st.lists(st.integers(min_value=40, max_value=700), min_size=1, max_size=5),
)
def test_salt_deep_in_a_long_escaped_string_is_decoded_or_refused_exactly_as_json_says(
    document: bytes,
    rnd: random.Random,
    salt: list[tuple[int, str]],
    sizes: list[int],
) -> None:
    # A long string dense with escapes, salted in its second half: the salt lands in the
    # middle of chunks that are unescaped whole, and across chunk boundaries.
    pieces = [rnd.choice(ESCAPES[c]) if c in "/+" else c for c in b64(document)]
    styles = [["\\n"], ["\\r\\n"], ["\\n", "\\r\\n", "\\t"]]  # one per provider, or mixed
    line_breaks = rnd.choice(styles)
    for position in range(76, len(pieces), 76):
        pieces[position] = rnd.choice(line_breaks) + pieces[position]
    for position, fragment in salt:
        at = len(pieces) // 2 + position % (len(pieces) // 2)
        pieces.insert(at, fragment)
    body = binary_body("".join(pieces))
    expected = reference_decode(body)

    if expected is None:
        prefix, _ = collect_until_error(body, sizes)
        groups = readable_base64_prefix(body)[: -(-len(prefix) // 3) * 4]
        assert binascii.a2b_base64(groups, strict_mode=True) == prefix
    else:
        decoded, _ = decode_all(body, sizes)
        assert decoded == expected


# -- refusals ------------------------------------------------------------------------------


def refuse(body: bytes, sizes: list[int] | None = None) -> BinaryDecodeError:
    _, error = collect_until_error(body, sizes or [len(body) or 1])
    return error


@pytest.mark.parametrize("sizes", [[1], [7], [100_000]])
def test_a_body_that_is_not_json_is_refused(sizes: list[int]) -> None:
    error = refuse(b"<html><body>Bad gateway</body></html>", sizes)

    assert "not JSON" in error.message
    assert isinstance(error, InvalidResponse)


def test_a_json_array_is_refused_as_not_an_object() -> None:
    error = refuse(b'[{"resourceType": "Binary", "content": "QUJD"}]')

    assert "array" in error.message


def test_an_empty_body_is_refused() -> None:
    with pytest.raises(BinaryDecodeError, match="empty"):
        list(decode(iter([])))


def test_a_wrong_resource_type_before_the_data_is_refused_before_any_byte_is_yielded() -> None:
    body = b'{"resourceType": "OperationOutcome", "content": "' + b"QUJD" * 1000 + b'"}'
    decoder = decode(chunked(body, [10]))

    with pytest.raises(BinaryDecodeError, match="OperationOutcome"):
        next(decoder)
    assert decoder.bytes_decoded == 0


def test_a_wrong_resource_type_after_the_data_is_refused_at_the_end() -> None:
    body = b'{"content": "' + b"QUJD" * 1000 + b'", "resourceType": "DocumentReference"}'

    prefix, error = collect_until_error(body, [64])

    assert "DocumentReference" in error.message
    assert prefix == b"ABC" * 1000


def test_a_resource_without_a_resource_type_is_refused() -> None:
    with pytest.raises(BinaryDecodeError, match="resourceType"):
        decode_all(b'{"contentType": "text/plain", "content": "QUJD"}')


def test_a_binary_without_content_or_data_is_refused() -> None:
    error = refuse(b'{"resourceType": "Binary", "contentType": "text/plain"}')

    assert "no 'content' (STU3) or 'data' (R4)" in error.message


def test_a_binary_with_both_content_and_data_is_refused_before_the_second_is_decoded() -> None:
    body = b'{"resourceType": "Binary", "content": "QUJD", "data": "REVG"}'

    prefix, error = collect_until_error(body, [len(body)])

    assert "both" in error.message
    assert prefix == b""


def test_a_content_element_that_is_not_a_string_is_refused() -> None:
    error = refuse(b'{"resourceType": "Binary", "content": null}')

    assert "not a base64 string" in error.message


def test_a_content_type_that_is_not_a_string_is_refused() -> None:
    error = refuse(b'{"resourceType": "Binary", "contentType": ["text/plain"], "content": ""}')

    assert "'contentType' element is not a string" in error.message


@pytest.mark.parametrize("bad", ["!", "-", "_", "\u00e9", "\\u00e9", "\\b", "\\\\", '\\"', "\x01"])
def test_a_character_outside_the_base64_alphabet_is_refused(bad: str) -> None:
    body = binary_body("QUJD" * 50 + "QU" + bad + "JD")

    prefix, error = collect_until_error(body, [16])

    assert "base64" in error.message
    assert (b"ABC" * 50).startswith(prefix)


def test_an_invalid_character_is_reported_with_its_position() -> None:
    error = refuse(binary_body("QUJD" * 10 + "Q!JD"))

    assert "'!' at base64 position 41" in error.message


@pytest.mark.parametrize("encoded", ["A===", "QUJDA===", "QU=D", "=UJD", "QUJD=", "Q==="])
def test_impossible_padding_is_refused(encoded: str) -> None:
    error = refuse(binary_body(encoded))

    assert "padding" in error.message or "incomplete" in error.message


@pytest.mark.parametrize(
    "encoded", ["QQ==QUJD", "QUI=QUJD", "QQ==Q", "QQ==\\u003D", "QQ==\\nQUJD", "QUI=\\u002F"]
)
def test_data_after_the_padding_is_refused(encoded: str) -> None:
    for sizes in ([1], [3], [1000]):
        error = refuse(binary_body(encoded), sizes)

        assert "after its '=' padding" in error.message


def test_whitespace_after_the_padding_is_accepted() -> None:
    decoded, _ = decode_all(binary_body("QQ==\\r\\n \\u0020"), [1])

    assert decoded == b"A"


@pytest.mark.parametrize("encoded", ["QUJ", "QU", "Q", "QUJDQQ=", "QUJDQQ"])
def test_base64_without_its_padding_is_refused(encoded: str) -> None:
    error = refuse(binary_body(encoded))

    assert "incomplete group" in error.message


@settings(max_examples=200, deadline=None)
@given(binary_documents(max_size=3000), st.data())
def test_a_body_cut_short_anywhere_is_refused_after_yielding_only_a_correct_prefix(
    case: tuple[bytes, bytes, dict[str, str]], data: st.DataObject
) -> None:
    document, body, _ = case
    end = body.rindex(b"}")
    cut = data.draw(st.integers(min_value=0, max_value=end), label="cut")
    sizes = data.draw(chunk_sizes, label="sizes")

    if cut == 0:
        with pytest.raises(BinaryDecodeError, match="empty"):
            list(decode(chunked(body[:cut], sizes)))
        return
    prefix, error = collect_until_error(body[:cut], sizes)

    assert document.startswith(prefix)
    assert "cut short" in error.message or "only whitespace" in error.message


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=1, max_size=3000), st.data())
def test_a_corrupted_base64_character_is_refused_and_no_wrong_byte_is_yielded(
    document: bytes, data: st.DataObject
) -> None:
    encoded = b64(document)
    at = data.draw(st.integers(min_value=0, max_value=len(encoded) - 1), label="at")
    bad = data.draw(st.sampled_from("!*-_.~\u00e9\x7f"), label="bad")
    assume(not (encoded[at] == "=" and bad == "="))
    body = binary_body(encoded[:at] + bad + encoded[at + 1 :])
    sizes = data.draw(chunk_sizes, label="sizes")

    prefix, _ = collect_until_error(body, sizes)

    assert document.startswith(prefix)
    assert len(prefix) <= at // 4 * 3


def test_a_body_whose_object_never_closes_is_refused() -> None:
    body = binary_body("QUJD")[:-1]

    prefix, error = collect_until_error(body, [5])

    assert prefix == b"ABC"
    assert "before the Binary resource's JSON object was closed" in error.message


def test_a_body_cut_inside_the_base64_is_refused_with_the_bytes_received_so_far() -> None:
    body = binary_body("QUJD" * 100)[:-30]

    prefix, error = collect_until_error(body, [64])

    assert "ended inside the base64 document content" in error.message
    assert prefix != b"ABC" * 100 and (b"ABC" * 100).startswith(prefix)


@pytest.mark.parametrize("trailer", [b"x", b"}", b',"a":1}', b"\n{}", b"\x00"])
def test_trailing_garbage_after_the_object_is_refused(trailer: bytes) -> None:
    body = binary_body("QUJD") + b"\r\n" + trailer

    for sizes in ([1], [len(body)]):
        error = refuse(body, sizes)

        assert "unexpected data after the end" in error.message


def test_trailing_whitespace_after_the_object_is_accepted() -> None:
    decoded, _ = decode_all(binary_body("QUJD") + b" \r\n\t\n", [2])

    assert decoded == b"ABC"


@pytest.mark.parametrize(
    "fragment",
    [
        b'"meta": {"a": 1,}',
        b'"meta": [1 2]',
        b'"meta": {"a" 1}',
        b'"meta": tru',
        b'"meta": 01',
        b'"meta": "\\x"',
        b'"meta": {"a": 1]',
        b'"meta" 1',
        b"meta: 1",
    ],
)
def test_malformed_json_in_a_skipped_field_is_refused(fragment: bytes) -> None:
    body = b'{"resourceType": "Binary", ' + fragment + b', "content": "QUJD"}'

    error = refuse(body)

    assert "not valid JSON" in error.message


def test_a_field_named_twice_is_refused() -> None:
    error = refuse(b'{"resourceType": "Binary", "content": "QUJD", "content": "QUJD"}')

    assert "more than one 'content'" in error.message


# -- what the decoder tolerates ----------------------------------------------------------


def test_a_byte_order_mark_and_leading_whitespace_are_skipped() -> None:
    decoded, _ = decode_all(b"\xef\xbb\xbf \r\n" + binary_body("QUJD"), [1])

    assert decoded == b"ABC"


def test_an_r4_data_element_decodes_like_stu3_content() -> None:
    decoded, decoder = decode_all(binary_body("QUJD", field="data"))

    assert decoded == b"ABC"
    assert decoder.scanner.data_field == "data"


def test_unknown_nested_fields_with_braces_quotes_and_escapes_are_skipped() -> None:
    nasty = json.dumps(
        {"meta": {"profile": ['}"{', "\\"], "x": [[], {}, [{"content": "not this"}]]}}
    )[1:-1]
    body = binary_body(
        "QUJD",
        before=f" {nasty}, " + '"securityContext": {"reference": "Patient/1"},',
        after=', "data\\u0032": "\\"}", "n": -1.5e+3, "t": [true, false, null]',
    )

    decoded, decoder = decode_all(body, [3])

    assert decoded == b"ABC"
    assert decoder.scanner.data_field == "content"


def test_a_field_name_written_with_escapes_is_recognised() -> None:
    body = (
        b'{"resource\\u0054ype": "Binary", "con\\u0074ent": "QUJD", "content\\u0054ype": "a\\/b"}'
    )

    decoded, decoder = decode_all(body, [1])

    assert decoded == b"ABC"
    assert decoder.content_type == "a/b"


def test_the_content_type_after_the_data_is_only_known_at_the_end() -> None:
    body = (
        b'{"resourceType": "Binary", "content": "'
        + b"QUJD" * 100
        + b'", "contentType": "image/png"}'
    )
    decoder = decode(chunked(body, [50]))

    next(decoder)
    assert decoder.content_type is None
    assert b"".join(decoder)
    assert decoder.content_type == "image/png"


def test_an_empty_content_string_is_an_empty_document() -> None:
    decoded, decoder = decode_all(binary_body(""))

    assert decoded == b""
    assert decoder.bytes_decoded == 0


def test_literal_line_breaks_inside_the_base64_are_tolerated() -> None:
    document = random.Random(2).randbytes(500)
    encoded = base64.encodebytes(document).decode().replace("\n", "\r\n")  # MIME, 76 a line

    decoded, _ = decode_all(binary_body(encoded), [13])

    assert decoded == document


def test_bytes_are_yielded_as_the_body_arrives_not_at_the_end() -> None:
    document = random.Random(3).randbytes(300_000)
    body = binary_body(b64(document))
    consumed = []

    def source() -> Iterator[bytes]:
        for chunk in chunked(body, [65536]):
            consumed.append(len(chunk))
            yield chunk

    decoder = decode(source())
    first = next(decoder)

    assert len(consumed) == 1
    assert document.startswith(first) and len(first) > 40_000


def test_the_push_scanner_returns_each_chunks_bytes_and_checks_the_end_on_close() -> None:
    scanner = BinaryScanner()

    assert scanner.feed(b'{"resourceType":"Binary","content":"QU') == b""
    assert scanner.feed(b"JDREVG") == b"ABCDEF"
    assert scanner.feed(b'"') == b""
    with pytest.raises(BinaryDecodeError, match="cut short"):
        scanner.close()


def test_the_push_scanner_refuses_to_continue_after_an_error() -> None:
    scanner = BinaryScanner()
    with pytest.raises(BinaryDecodeError):
        scanner.feed(b"[")

    with pytest.raises(BinaryDecodeError, match="already failed"):
        scanner.feed(b"{}")


# -- memory --------------------------------------------------------------------------------


def test_decoding_a_50_mb_document_holds_only_a_few_mb_of_memory() -> None:
    """Not timed: this asserts how memory behaves, whatever the machine's speed."""
    source_digest = hashlib.sha256()
    rnd = random.Random(50)

    def body() -> Iterator[bytes]:
        # Generated block by block; blocks are a multiple of 3 bytes so the base64 of each
        # needs no padding and the concatenation is one valid base64 string.
        yield b'{"resourceType": "Binary", "id": "big", "contentType": "application/pdf", "content": "'
        for _ in range(50 * 16):
            block = rnd.randbytes(3 * 21846)  # 65538 bytes: a multiple of 3, about 64 KiB
            source_digest.update(block)
            yield base64.b64encode(block)
        yield b'"}'

    decoded_digest = hashlib.sha256()
    tracemalloc.start()
    try:
        decoder = decode(body())
        for piece in decoder:
            decoded_digest.update(piece)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert decoder.bytes_decoded == 50 * 16 * 3 * 21846
    assert decoded_digest.digest() == source_digest.digest()
    assert peak < 4 * 1024 * 1024, f"peak {peak / 2**20:.1f} MiB"
