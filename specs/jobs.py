"""The Python side of specs/jobs.yaml: the work its actions name.

A ``work`` function gets ``(session, input, match)`` and returns a generator
(each ``next()`` one step; what it yields is progress, or ``sleep(s)`` to wait);
with ``in: process`` or ``in: thread`` it is a plain function of ``(input, match)``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Generator
from typing import Any

from statemachine_server.work import sleep


def count_primes(session: Any, input: str, match: dict[str, str]) -> Generator[Any, None, int]:
    """One candidate per step; a progress line every 10,000 candidates."""
    found = 0
    for n in range(2, int(match["n"])):
        found += all(n % d for d in range(2, int(n**0.5) + 1))
        yield f"{n} checked, {found} primes so far" if n % 10_000 == 0 else None
    return found


def pause(session: Any, input: str, match: dict[str, str]) -> Generator[Any, None, None]:
    yield sleep(float(match["seconds"]))


def slow_hash(input: str, match: dict[str, str]) -> str:
    """Runs in a worker process."""
    text = match["text"].encode()
    return hashlib.scrypt(text, salt=b"example", n=1 << 14, r=8, p=1).hex()[:32]
