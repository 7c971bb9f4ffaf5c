"""Filter micro-benchmark: records per second through each filter, and a naive splitter.

``python -m benchmarks.micro.filters [--quick]`` prints one JSON object: for each
case and implementation, ``{"count": records, "seconds": T, "rate": records / T}``.

Cases: small (16-byte) and large (4 KiB) records; ``get`` fed the whole stream
in one chunk (``whole``) or in 7-byte pieces (``7b``); and ``put`` of batches of
16 records (what one connection's tick typically sends). Both implementations
see the same bytes; their outputs are compared once so a fast wrong answer cannot
win.

The baseline, :class:`NaiveSplitter`, is what one writes first: ``buf += data``
then ``buf.split(b"\\n")`` on every call. Fed small pieces of long lines it
rescans and copies the whole buffer each time: quadratic in the line length.

Each measurement repeats whole passes over its input for at least 0.3 s, so
every figure rests on enough work to be timed.

The other filters (``"filters"`` in the output) run the same cases, each on
records of its own kind of about the same size on the wire: text lines for the
line filter's other separators, ``bytes`` for the stream and block filters, and
for JSON and MessagePack a record of an integer and a string (a dict, or a
``msgspec.Struct`` when the filter is typed), at least 24 B small. Every ``get``
case checks once that the records decoded are the records encoded. The stream
filter's records are its reads, so its ``get`` rate is reads per second.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from typing import Any, Protocol

import msgspec

from statemachine_server import (
    BlockFilter,
    JSONFilter,
    LineFilter,
    MsgPackFilter,
    Stack,
    StreamFilter,
)

SMALL, LARGE = 16, 4096  # record sizes, "\n" included
PIECE = 7  # bytes per get() call in the chunked cases
PUT_BATCH = 16
MIN_SECONDS = 0.3  # per case and implementation (a tenth with --quick)


class Splitter(Protocol):
    def get(self, data: bytes) -> list[str]: ...

    def put(self, records: list[str]) -> bytes: ...


class NaiveSplitter:
    """The obvious line splitter: concatenate, split, decode each line."""

    def __init__(self) -> None:
        self.buf = b""

    def get(self, data: bytes) -> list[str]:
        self.buf += data
        *lines, self.buf = self.buf.split(b"\n")
        return [line.decode("utf-8", "surrogateescape") for line in lines]

    def put(self, records: list[str]) -> bytes:
        return b"".join(r.encode("utf-8", "surrogateescape") + b"\n" for r in records)


def records(size: int, n: int) -> list[str]:
    """``n`` printable records of ``size - 1`` characters, 26 different ones in turn."""
    alphabet = "abcdefghijklmnopqrstuvwxyz"
    distinct = [((alphabet[k:] + alphabet[:k]) * (size // 26 + 1))[: size - 1] for k in range(26)]
    return [distinct[i % 26] for i in range(n)]


def time_get(make: Callable[[], Splitter], chunks: list[bytes]) -> tuple[int, float, list[str]]:
    splitter = make()
    get = splitter.get
    out: list[str] = []
    started = time.perf_counter()
    for chunk in chunks:
        out += get(chunk)
    return len(out), time.perf_counter() - started, out


def time_put(make: Callable[[], Splitter], batches: list[list[str]]) -> tuple[int, float, bytes]:
    put = make().put
    parts: list[bytes] = []
    started = time.perf_counter()
    for batch in batches:
        parts.append(put(batch))
    elapsed = time.perf_counter() - started
    return sum(map(len, batches)), elapsed, b"".join(parts)


IMPLEMENTATIONS: dict[str, Callable[[], Splitter]] = {
    "ours": LineFilter,
    "naive": NaiveSplitter,
}

#: Case name -> (record size, records at full size, how: whole | pieces | put).
CASES: dict[str, tuple[int, int, str]] = {
    "get_small_whole": (SMALL, 200_000, "whole"),
    "get_small_7b": (SMALL, 50_000, "pieces"),
    "get_large_whole": (LARGE, 4_000, "whole"),
    "get_large_7b": (LARGE, 300, "pieces"),
    "put_small": (SMALL, 200_000, "put"),
    "put_large": (LARGE, 4_000, "put"),
}


def run_case(size: int, n: int, how: str, min_seconds: float) -> dict[str, Any]:
    """Time every implementation on the same input, each for at least ``min_seconds``."""
    recs = records(size, n)
    data = "".join(r + "\n" for r in recs).encode()
    batches = [recs[i : i + PUT_BATCH] for i in range(0, len(recs), PUT_BATCH)]
    step = len(data) if how == "whole" else PIECE
    chunks = [data[i : i + step] for i in range(0, len(data), step)]
    results: dict[str, Any] = {}
    outputs: list[object] = []
    output: object = None
    for name, make in IMPLEMENTATIONS.items():
        total, seconds, passes = 0, 0.0, 0
        # Whole passes over the input until enough time has gone by (and at most
        # 10,000 passes): short cases are repeated, long ones run once.
        while passes == 0 or (seconds < min_seconds and passes < 10_000):
            if how == "put":
                count, elapsed, output = time_put(make, batches)
            else:
                count, elapsed, output = time_get(make, chunks)
            total, seconds, passes = total + count, seconds + elapsed, passes + 1
        outputs.append(output)
        results[name] = {"count": total, "seconds": seconds, "rate": total / seconds,
                         "passes": passes}  # fmt: skip
    results["same_output"] = all(o == outputs[0] for o in outputs)
    return results


class Rec(msgspec.Struct):
    """The typed record of the JSON and MessagePack cases."""

    id: int
    name: str


def payload(kind: str, size: int, n: int) -> list[Any]:
    """``n`` records of ``kind`` taking about ``size`` bytes each on the wire."""
    text = records(size, n)
    if kind == "text":
        return text
    if kind == "bytes":
        return [t.encode() + b"\n" for t in text]  # exactly ``size`` bytes
    name = [t[: max(1, size - 24)] for t in text]  # '{"id":NNN,"name":""}' and "\n"
    if kind == "dict":
        return [{"id": i % 1000, "name": s} for i, s in enumerate(name)]
    return [Rec(i % 1000, s) for i, s in enumerate(name)]


#: Filter name -> (factory taking the record size, kind of records).
FILTERS: dict[str, tuple[Callable[[int], Any], str]] = {
    "line_crlf": (lambda size: LineFilter(separator="\r\n"), "text"),
    "line_regex": (lambda size: LineFilter(regex=rb"\r?\n"), "text"),
    "stream": (lambda size: StreamFilter(), "bytes"),
    "block_fixed": (lambda size: BlockFilter(size), "bytes"),
    "block_u32": (lambda size: BlockFilter(codec="u32"), "bytes"),
    "block_netstring": (lambda size: BlockFilter(codec="netstring"), "bytes"),
    "json": (lambda size: JSONFilter(), "dict"),
    "json_typed": (lambda size: JSONFilter(Rec), "struct"),
    "msgpack": (lambda size: MsgPackFilter(), "dict"),
    "msgpack_typed": (lambda size: MsgPackFilter(Rec), "struct"),
    "stack_u16_json": (lambda size: Stack(BlockFilter(codec="u16"), JSONFilter(Rec)), "struct"),
}


def run_filter_case(name: str, size: int, n: int, how: str, min_seconds: float) -> dict[str, Any]:
    """Time one filter on one case, for at least ``min_seconds``."""
    factory, kind = FILTERS[name]
    recs = payload(kind, size, n)
    data = factory(size).put(recs)
    batches = [recs[i : i + PUT_BATCH] for i in range(0, len(recs), PUT_BATCH)]
    step = len(data) if how == "whole" else PIECE
    chunks = [data[i : i + step] for i in range(0, len(data), step)]
    total, seconds, passes = 0, 0.0, 0
    output: Any = None
    while passes == 0 or (seconds < min_seconds and passes < 10_000):
        if how == "put":
            count, elapsed, output = time_put(lambda: factory(size), batches)
        else:
            count, elapsed, output = time_get(lambda: factory(size), chunks)
        total, seconds, passes = total + count, seconds + elapsed, passes + 1
    if how == "put":
        ok = output == data
    elif name == "stream":
        ok = b"".join(output) == data
    else:
        ok = output == recs
    return {"count": total, "seconds": seconds, "rate": total / seconds, "passes": passes,
            "ok": ok}  # fmt: skip


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.micro.filters")
    parser.add_argument("--quick", action="store_true", help="a tenth of the records")
    parser.add_argument("--rotate", type=int, default=0, help="start with the Nth case")
    args = parser.parse_args(argv)
    scale = 10 if args.quick else 1
    names = list(CASES)
    shift = args.rotate % len(names)
    out: dict[str, Any] = {}
    for name in names[shift:] + names[:shift]:
        size, n, how = CASES[name]
        run_case(size, max(26, n // 100), how, 0.0)  # warm-up
        out[name] = run_case(size, max(26, n // scale), how, MIN_SECONDS / scale)
    others: dict[str, Any] = {}
    for fname in FILTERS:
        others[fname] = {}
        for name in names[shift:] + names[:shift]:
            size, n, how = CASES[name]
            run_filter_case(fname, size, max(26, n // 100), how, 0.0)  # warm-up
            others[fname][name] = run_filter_case(
                fname, size, max(26, n // scale), how, MIN_SECONDS / scale
            )
    out["filters"] = others
    print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
