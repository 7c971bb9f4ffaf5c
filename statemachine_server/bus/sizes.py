"""How many sessions a group has across processes (``group_size``): sans-I/O.

Each node keeps its own member counts in a Redis hash of its own (one field per
group it has members in, and a marker field), with a time to live it renews at
every refresh: a node that crashes takes its counts with it within :data:`TTL`.
At each refresh (:data:`REFRESH`, and soon after a join, a leave or a question
about a group not read yet) a node writes the counts that changed and reads the
other nodes' counts of the groups it cares about: those it has members in and
those an expression asked about in the last :data:`ASKED_FOR` seconds. That is
two round trips, off the per-message path. So ``group_size`` is this node's
count as it is now plus the others' as of the last refresh: eventually
consistent, a second behind at most while Redis answers. When Redis has not
been read for :data:`TTL`, the others' counts are forgotten: a broadcast would
not reach their members either.

Why not one counter per group that joins and leaves increment (HINCRBY)? It is
exact while every node lives, but the members of a node that crashed stay
counted forever; the per-node hash expires with its node. It costs one field
written per changed group per refresh, and one HMGET per other node.

This module only keeps the books: the bus (:mod:`.redisbus`) sends the writes
it returns and hands back what Redis answered.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

__all__ = ["ASKED_FOR", "MARK", "MAX_ASKED", "REFRESH", "TTL", "Sizes", "field"]

#: Seconds between refreshes: how stale another node's count may be.
REFRESH = 1.0
#: Seconds a node's counts live without a refresh: five missed refreshes (a
#: loop held for a second is reported by the watchdog; five is a dead node).
TTL = 5.0
#: Seconds a group asked about (and with no members here) is still read.
ASKED_FOR = 60.0
#: Groups asked about that are read at most: a spec asking about a client's
#: words cannot make each refresh read without bound.
MAX_ASKED = 10_000
#: The field present in every live node's hash (groups' fields start with ``g:``).
MARK = b"."


def field(group: str) -> bytes:
    """The hash field of ``group``'s count."""
    return b"g:" + group.encode()


class Sizes:
    """The member counts: this node's (exact) and the other nodes' (as last read).

    Args:
        ttl: seconds after the last successful read that the others' counts are
            forgotten.
    """

    def __init__(self, *, ttl: float = TTL):
        self.ttl = ttl
        #: This node's count per group with members here.
        self.local: dict[str, int] = {}
        #: Whether a group was asked about that no refresh has read yet.
        self.curious = False
        self._dirty: set[str] = set()
        self._whole = False
        self._others: dict[str, int] = {}
        self._read_at = -math.inf
        # Group -> when last asked about; insertion order is first asked.
        self._asked: dict[str, float] = {}

    def changed(self, group: str, count: int) -> None:
        """This node now has ``count`` members in ``group``."""
        if count:
            self.local[group] = count
        else:
            self.local.pop(group, None)
        self._dirty.add(group)

    def lost(self) -> None:
        """This node's hash may be gone or out of date (Redis restarted, or a write
        failed): write it whole at the next refresh."""
        self._whole = True

    def writes(self) -> tuple[bool, dict[bytes, int], list[bytes]]:
        """What to write to this node's hash since the last call: whether to
        replace it whole, the fields to set and the fields to delete (the marker,
        :data:`MARK`, is the bus's to set)."""
        local = self.local
        if self._whole:
            self._whole = False
            self._dirty = set()
            return True, {field(group): count for group, count in local.items()}, []
        counts: dict[bytes, int] = {}
        gone: list[bytes] = []
        for group in self._dirty:
            count = local.get(group)
            if count:
                counts[field(group)] = count
            else:
                gone.append(field(group))
        self._dirty = set()
        return False, counts, gone

    def asked(self, group: str, now: float) -> None:
        """An expression asked for ``group``'s size: read it at the next refreshes."""
        asked = self._asked
        if group not in asked:
            self.curious = True
            if len(asked) >= MAX_ASKED:
                del asked[next(iter(asked))]
        asked[group] = now

    def wanted(self, now: float) -> list[str]:
        """The groups whose counts a refresh reads: those with members here, and
        those asked about lately."""
        asked = self._asked
        for group in [g for g, when in asked.items() if now - when > ASKED_FOR]:
            del asked[group]
        self.curious = False
        return [*self.local, *(g for g in asked if g not in self.local)]

    def update(
        self, groups: Sequence[str], rows: Iterable[Sequence[bytes | None]], now: float
    ) -> None:
        """The others' counts of ``groups`` as read: one row per live node, a count
        (or None) per group in that order."""
        totals = [0] * len(groups)
        for row in rows:
            for i, value in enumerate(row):
                if value:
                    totals[i] += int(value)
        self._others = {group: n for group, n in zip(groups, totals, strict=True) if n}
        self._read_at = now

    def others(self, group: str, now: float) -> int:
        """The other nodes' members of ``group`` as last read; 0 once that read is
        older than the TTL."""
        if now - self._read_at > self.ttl:
            return 0
        return self._others.get(group, 0)

    def size(self, group: str, now: float) -> int:
        """``group``'s members on every node (and a note to read it from now on)."""
        self.asked(group, now)
        return self.local.get(group, 0) + self.others(group, now)
