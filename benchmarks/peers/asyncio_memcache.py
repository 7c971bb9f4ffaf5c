"""Peer ``asyncio-memcache``: a hand-written memcached text-protocol subset on asyncio.

The baseline of the memcache scenario: what a careful person writes in an
afternoon on ``asyncio.Protocol``, with no framework. Commands:

* ``set KEY FLAGS EXPTIME BYTES [noreply]`` + a data block of ``BYTES`` bytes +
  ``\\r\\n``: ``STORED`` (nothing with ``noreply``);
* ``get KEY...`` / ``gets KEY...``: ``VALUE KEY FLAGS BYTES[ CAS]`` + data per
  item found, then ``END`` (``gets`` adds the CAS unique, as memcached does);
* ``delete KEY [noreply]``: ``DELETED`` or ``NOT_FOUND``;
* ``quit``: close. Anything else: ``ERROR``.

Items live in one dict for the whole server; expiry times are accepted and
ignored. Parsing keeps one ``bytes`` buffer per connection and an offset into it,
so a chunk is scanned once; all the replies to one chunk go out in one
``transport.write``. Limits as memcached's: keys of at most 250 bytes, command
lines of at most 2048 bytes, values of at most 1 MiB; a line past the limit gets
``CLIENT_ERROR`` and the connection is closed (there is no telling where the
next command starts). No logging.

Usage: ``python asyncio_memcache.py PORT`` (0 picks a free port). Prints
``listening on HOST:PORT`` once bound; SIGTERM stops it with exit status 0.
"""

from __future__ import annotations

import asyncio
import signal
import sys

MAX_KEY = 250  # memcached's KEY_MAX_LENGTH
MAX_LINE = 2048  # memcached closes a connection whose command line is longer
MAX_VALUE = 1 << 20  # memcached's default item size limit (-I 1m)
NOREPLY = b"noreply"

#: One item: flags (as the decimal bytes echoed back), data, CAS unique.
Item = tuple[bytes, bytes, int]


class Memcache(asyncio.Protocol):
    """One connection: a command line, or the data block of a ``set``, at a time."""

    def __init__(self, items: dict[bytes, Item], cas: list[int]) -> None:
        self.items = items
        self.cas = cas  # [last CAS unique], shared by every connection
        self.buffer = b""
        #: While a ``set`` waits for its data block: (key, flags, size, noreply).
        self.pending: tuple[bytes, bytes, int, bool] | None = None
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        buf = self.buffer + data if self.buffer else data
        out: list[bytes] = []
        pos = 0
        end = len(buf)
        while pos < end:
            if self.pending is not None:
                key, flags, size, noreply = self.pending
                stop = pos + size
                if end < stop + 2:
                    break  # the block is not all here yet
                if buf[stop : stop + 2] != b"\r\n":
                    out.append(b"CLIENT_ERROR bad data chunk\r\n")
                    self._close(out)
                    return
                self.cas[0] += 1
                self.items[key] = (flags, buf[pos:stop], self.cas[0])
                self.pending = None
                pos = stop + 2
                if not noreply:
                    out.append(b"STORED\r\n")
                continue
            eol = buf.find(b"\r\n", pos)
            if eol < 0:
                if end - pos > MAX_LINE:
                    out.append(b"CLIENT_ERROR line too long\r\n")
                    self._close(out)
                    return
                break
            line = buf[pos:eol]
            pos = eol + 2
            if not self._command(line, out):
                self._close(out)
                return
        self.buffer = buf[pos:]
        if out:
            self.transport.write(b"".join(out))

    def _command(self, line: bytes, out: list[bytes]) -> bool:
        """Run one command line, appending its replies; False: close the connection."""
        parts = line.split()
        if not parts:
            out.append(b"ERROR\r\n")
            return True
        command = parts[0]
        if command == b"get" or command == b"gets":
            items = self.items
            keys = parts[1:]
            if not keys or any(len(k) > MAX_KEY for k in keys):
                out.append(b"CLIENT_ERROR bad command line format\r\n")
                return True
            for key in keys:
                item = items.get(key)
                if item is not None:
                    flags, data, cas = item
                    if command == b"gets":
                        head = b"VALUE %s %s %d %d\r\n" % (key, flags, len(data), cas)
                    else:
                        head = b"VALUE %s %s %d\r\n" % (key, flags, len(data))
                    out += (head, data, b"\r\n")
            out.append(b"END\r\n")
            return True
        if command == b"set":
            return self._set(parts, out)
        if command == b"delete":
            if len(parts) not in (2, 3) or (len(parts) == 3 and parts[2] != NOREPLY):
                out.append(b"CLIENT_ERROR bad command line format\r\n")
                return True
            found = self.items.pop(parts[1], None) is not None
            if len(parts) == 2:
                out.append(b"DELETED\r\n" if found else b"NOT_FOUND\r\n")
            return True
        if command == b"quit":
            return False
        out.append(b"ERROR\r\n")
        return True

    def _set(self, parts: list[bytes], out: list[bytes]) -> bool:
        """``set KEY FLAGS EXPTIME BYTES [noreply]``: wait for the data block."""
        noreply = len(parts) == 6 and parts[5] == NOREPLY
        if len(parts) != 5 and not noreply:
            out.append(b"ERROR\r\n")
            return True
        key = parts[1]
        try:
            flags, _exptime, size = int(parts[2]), int(parts[3]), int(parts[4])
        except ValueError:
            out.append(b"CLIENT_ERROR bad command line format\r\n")
            return True
        if len(key) > MAX_KEY or not 0 <= flags < 1 << 32 or size < 0:
            out.append(b"CLIENT_ERROR bad command line format\r\n")
            return True
        if size > MAX_VALUE:
            # memcached swallows the block; with no reason to trust the client, close.
            out.append(b"SERVER_ERROR object too large for cache\r\n")
            return False
        self.pending = (key, b"%d" % flags, size, noreply)
        return True

    def _close(self, out: list[bytes]) -> None:
        assert self.transport is not None
        self.transport.write(b"".join(out))
        self.transport.close()
        self.buffer = b""
        self.pending = None


async def main(port: int) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    items: dict[bytes, Item] = {}
    cas = [0]
    server = await loop.create_server(lambda: Memcache(items, cas), "127.0.0.1", port)
    host, bound = server.sockets[0].getsockname()[:2]
    print(f"listening on {host}:{bound}", flush=True)
    async with server:
        await stop.wait()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 0))
