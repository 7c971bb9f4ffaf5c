"""The line filter, fed whole, byte by byte, in random chunks, and with trailing data."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from statemachine_server import LineFilter, RecordTooLong


def feed(f: LineFilter, chunks: list[bytes]) -> list[str]:
    out: list[str] = []
    for chunk in chunks:
        out.extend(f.get(chunk))
    return out


def test_lf_and_crlf_both_end_lines() -> None:
    assert LineFilter().get(b"a\nb\r\nc\n") == ["a", "b", "c"]


def test_incomplete_line_waits_for_its_newline() -> None:
    f = LineFilter()
    assert f.get(b"hel") == []
    assert f.get_pending() == b"hel"
    assert f.get(b"lo\nwor") == ["hello"]
    assert f.get_pending() == b"wor"
    assert f.get(b"ld\n") == ["world"]
    assert f.get_pending() == b""


def test_crlf_split_between_chunks() -> None:
    f = LineFilter()
    assert feed(f, [b"abc\r", b"\ndef\r", b"\n"]) == ["abc", "def"]


def test_empty_lines_are_records() -> None:
    assert LineFilter().get(b"\n\r\n\n") == ["", "", ""]


def test_invalid_utf8_round_trips_byte_for_byte() -> None:
    raw = b"\xff\xfe\x00 caf\xc3\xa9 \xc3\n"
    f = LineFilter()
    (line,) = f.get(raw)
    assert f.put([line]) == raw


def test_multibyte_character_split_across_chunks() -> None:
    data = "héllo wörld ☃\n".encode()
    assert feed(LineFilter(), [data[i : i + 1] for i in range(len(data))]) == ["héllo wörld ☃"]


def test_put_adds_newlines() -> None:
    assert LineFilter().put(["a", "", "b"]) == b"a\n\nb\n"


def test_line_of_exactly_max_length_is_accepted() -> None:
    f = LineFilter(max_length=8)
    assert f.get(b"x" * 8 + b"\r\n") == ["x" * 8]
    assert feed(LineFilter(max_length=8), [b"x" * 8, b"\r", b"\n"]) == ["x" * 8]


def test_line_over_max_length_raises_with_earlier_lines() -> None:
    f = LineFilter(max_length=8)
    with pytest.raises(RecordTooLong) as info:
        f.get(b"ok\nalso ok\n" + b"x" * 9 + b"\nlater\n")
    assert info.value.records == ["ok", "also ok"]


def test_unterminated_line_over_max_length_raises_early() -> None:
    f = LineFilter(max_length=8)
    f.get(b"x" * 5)
    with pytest.raises(RecordTooLong):
        f.get(b"x" * 5)  # 10 bytes buffered, no newline: no need to wait for one


def test_overlong_tail_after_good_lines_keeps_them() -> None:
    f = LineFilter(max_length=4)
    with pytest.raises(RecordTooLong) as info:
        f.get(b"ab\n" + b"y" * 10)
    assert info.value.records == ["ab"]


def test_byte_by_byte_long_line_keeps_buffer_bounded() -> None:
    f = LineFilter(max_length=1000)
    for _ in range(1000):
        assert f.get(b"z") == []
    with pytest.raises(RecordTooLong):
        f.get(b"z")
        f.get(b"z")
    assert len(f.get_pending()) <= 1002


def test_max_length_must_be_positive() -> None:
    with pytest.raises(ValueError):
        LineFilter(max_length=0)


lines = st.lists(
    st.binary(max_size=40).map(lambda b: b.replace(b"\n", b"").rstrip(b"\r")), max_size=30
)


@given(lines=lines, cuts=st.lists(st.integers(min_value=0, max_value=2000), max_size=20))
def test_any_split_gives_the_same_records(lines: list[bytes], cuts: list[int]) -> None:
    stream = b"".join(line + b"\n" for line in lines) + b"trailing"
    points = sorted({c % (len(stream) + 1) for c in cuts})
    chunks = [stream[a:b] for a, b in zip([0, *points], [*points, len(stream)], strict=True)]
    f = LineFilter()
    got = feed(f, chunks)
    assert [s.encode("utf-8", "surrogateescape") for s in got] == lines
    assert f.get_pending() == b"trailing"


@given(
    records=st.lists(st.text().map(lambda t: t.replace("\n", "").replace("\r", "")), max_size=20)
)
def test_get_of_put_is_identity(records: list[str]) -> None:
    records = [
        r.encode("utf-8", "surrogatepass").decode("utf-8", "surrogateescape") for r in records
    ]
    f = LineFilter()
    if not records:
        return
    assert f.get(f.put(records)) == records


def stream_parts(pieces: list[bytes]) -> st.SearchStrategy[tuple[list[bytes], bytes]]:
    piece = st.sampled_from(pieces)
    return st.tuples(
        st.lists(st.lists(piece, max_size=8).map(b"".join), max_size=40),
        st.lists(piece, max_size=12).map(b"".join),
    )


@given(
    parts=stream_parts([b"a", b"\r", b"\x00"]) | stream_parts([b"a", b"\r", b"\xc3\xa9", b"\xff"]),
    cuts=st.lists(st.integers(min_value=0, max_value=4000), max_size=8),
)
def test_overlong_lines_are_caught_at_any_split(
    parts: tuple[list[bytes], bytes], cuts: list[int]
) -> None:
    # A small limit, so that reads bigger than it (the slow path) and lines over
    # it both happen; ASCII and non-ASCII text, with and without "\r".
    limit = 6
    lines, tail = parts
    stream = b"".join(line + b"\n" for line in lines) + tail
    expected: list[bytes] = []
    overlong = False
    for line in lines:
        line = line[:-1] if line.endswith(b"\r") else line
        if len(line) > limit:
            overlong = True
            break
        expected.append(line)
    else:
        overlong = len(tail) > limit + 1
    points = sorted({c % (len(stream) + 1) for c in cuts})
    f = LineFilter(max_length=limit)
    got: list[str] = []
    failed = False
    for a, b in zip([0, *points], [*points, len(stream)], strict=True):
        try:
            got += f.get(stream[a:b])
        except RecordTooLong as exc:
            got += exc.records
            failed = True
            break
    assert failed == overlong
    assert [s.encode("utf-8", "surrogateescape") for s in got] == expected


@given(
    runs=st.lists(
        st.tuples(st.integers(0, 700), st.sampled_from(["x", "é", "\r", "\n", "\r\n", "||"])),
        max_size=30,
    ),
    sep=st.sampled_from(["\n", "\r\n", "||"]),
)
def test_splitting_long_text_by_searching_is_str_split(
    runs: list[tuple[int, str]], sep: str
) -> None:
    # Long and short lines in any order, the separator at either end or missing.
    from statemachine_server.filters.line import split_long

    text = "".join("y" * n + piece for n, piece in runs)
    assert split_long(text, sep) == text.split(sep)


def test_a_read_of_long_lines_frames_as_short_reads_do() -> None:
    lines = [b"a" * 70_000, b"", b"b" * 300, b"c" * 9_000 + b"\r", b"d"]
    one = LineFilter(max_length=1 << 20).get(b"\n".join(lines) + b"\n")
    each = [LineFilter(max_length=1 << 20).get(line + b"\n") for line in lines]
    assert one == [record for got in each for record in got]
    assert one[3] == "c" * 9_000
