"""Groups, broadcasts and named events across processes, over Redis (``server.bus``).

:mod:`.wire` is what one process tells the others, as bytes, and how things are
named (channels, keys, session addresses); :mod:`.sizes` keeps the books of the
groups' member counts; both are sans-I/O. :mod:`.redisbus` is the node itself,
on redis-py's asyncio client: importing it imports redis (about 0.15 s), so
this package does not, and a server without a bus never pays for it.
"""

from __future__ import annotations

from .wire import address, parse_address

__all__ = ["address", "parse_address"]
