"""The Python side of ``soak.yaml``: the chunked job its ``work`` action names.

The same job as ``specs/jobs.py``'s ``count_primes``: a generator, one candidate
per step (run in the kernel's time slices), a progress value every 10,000.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any


def count_primes(session: Any, input: str, match: dict[str, str]) -> Generator[Any, None, int]:
    """Count the primes below ``match["n"]`` by trial division, one candidate per step."""
    found = 0
    for n in range(2, int(match["n"])):
        found += all(n % d for d in range(2, int(n**0.5) + 1))
        yield f"{n} checked, {found} primes so far" if n % 10_000 == 0 else None
    return found
