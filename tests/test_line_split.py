"""The line filters' shared decode-and-split step, on the paths that call it."""

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


@pytest.mark.parametrize("body", [b"xxxx", b"x\xc3\xa9x", b"x\xffxx"])
@pytest.mark.parametrize("held", [b"", b"a"])
def test_line_of_max_length_and_cr_in_a_big_read(body: bytes, held: bytes) -> None:
    # More than max_length bytes in one read: the checked path. The "\r" is not
    # part of the line, so a line of exactly max_length bytes before it is good.
    f = LineFilter(max_length=len(body))
    assert f.get(held) == []  # with something held, the buffered path
    got = f.get(b"b\n" + body + b"\r\n" + body + b"\n")
    assert [s.encode("utf-8", "surrogateescape") for s in got] == [held + b"b", body, body]


def test_non_ascii_line_over_the_limit_in_a_big_read() -> None:
    f = LineFilter(max_length=4)
    with pytest.raises(RecordTooLong) as info:
        f.get("ok\r\né\nééé\nlater\n".encode())  # "ééé" is 6 bytes, 3 characters
    assert info.value.records == ["ok", "é"]


def test_overflowing_tail_carries_the_decoded_lines() -> None:
    f = LineFilter(max_length=4)
    assert f.get(b"a") == []
    with pytest.raises(RecordTooLong) as info:
        f.get(b"b\r\nc\n" + b"y" * 6)
    assert info.value.records == ["ab", "c"]


def test_literal_newline_separator_keeps_the_cr() -> None:
    # Only the default framing drops "\r": "\n" with another output separator is
    # taken literally.
    f = LineFilter(separator="\n", output_separator="\r\n")
    assert feed(f, [b"a\r\nb", b"\r\n"]) == ["a\r", "b\r"]


@pytest.mark.parametrize("held", [b"", b"z"])
def test_separated_big_read_checks_bytes_not_characters(held: bytes) -> None:
    # "|;" cannot overlap itself: the split path. A read over max_length has its
    # lines' lengths checked in bytes, held bytes included.
    f = LineFilter(max_length=5, separator="|;")
    assert f.get(held) == []
    assert f.get("éé|;ab|;".encode()) == [held.decode() + "éé", "ab"]
    f = LineFilter(max_length=5, separator="|;")
    assert f.get(held) == []
    with pytest.raises(RecordTooLong) as info:
        f.get("ab|;ééé|;cd|;".encode())
    assert info.value.records == [held.decode() + "ab"]


pieces = st.sampled_from([b"a", b"|", b";", b"\r", b"\n", b"\xc3\xa9", b"\xff"])


@given(
    lines=st.lists(st.lists(pieces, max_size=6).map(b"".join), max_size=30),
    cuts=st.lists(st.integers(min_value=0, max_value=4000), max_size=8),
)
def test_separated_any_split_gives_the_same_records(lines: list[bytes], cuts: list[int]) -> None:
    sep = b"|;"
    limit = 6
    lines = [line for line in lines if sep not in line]
    stream = b"".join(line + sep for line in lines) + b"tail"
    expected: list[bytes] = []
    overlong = False
    for line in lines:
        if len(line) > limit:
            overlong = True
            break
        expected.append(line)
    points = sorted({c % (len(stream) + 1) for c in cuts})
    f = LineFilter(max_length=limit, separator=sep)
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
