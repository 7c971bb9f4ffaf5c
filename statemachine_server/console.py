"""The console log: where ``log`` actions write (the recipe's ``print``).

Lines gathered during a kernel tick go out in one write at its end: no system
call per line, and still prompt when stdout is a pipe.

A server must not stall because nobody reads its log. A blocking write to a full
pipe would freeze every client, so when stdout is a pipe or a socket it is made
non-blocking: what the reader has not taken yet waits in a buffer that the event
loop drains as the pipe empties. The buffer is bounded (``max_backlog``, 16 MiB
by default); past it, lines are dropped and counted, and the count is reported
once the reader catches up. :meth:`ConsoleLog.close` writes out whatever is left,
blocking, when the server stops: a reader that is still there gets every line.
Terminals and regular files are written as usual (they do not fill up).

Client input is untrusted, and a log line may carry it: lines are cut to
``max_line`` characters, and characters that are not printable (control codes such
as ESC, which could drive the operator's terminal, and undecodable bytes) are
written as escapes like ``\x1b``, so a log line is always one line of clean UTF-8.

In JSON format (``server.log.format: json``, see :mod:`.logs`) each line is one
JSON object whose ``message`` is the line as text format would write it, cleaned
and cut the same way; the object itself is not cut.
"""

from __future__ import annotations

import asyncio
import logging
import os
import stat
import sys
from typing import Any, TextIO

from .core.kernel import Kernel
from .logs import spec_line

__all__ = ["DEFAULT_MAX_BACKLOG", "DEFAULT_MAX_LINE", "ConsoleLog", "clean"]

log = logging.getLogger("statemachine_server")

DEFAULT_MAX_BACKLOG = 16 << 20
DEFAULT_MAX_LINE = 1024
# Printable ASCII: deleting it from a tick's text leaves only the newlines that
# join the lines when no line needs cleaning (one pass in C for the batch). A
# newline inside a line would forge a log line: it leaves one more, so it is caught.
_SAFE = bytes(range(0x20, 0x7F))


def clean(line: str, limit: int) -> str:
    """``line`` as one printable line of at most ``limit`` characters (see above)."""
    # Cut before escaping: an escape only lengthens, so what lies past the first
    # ``limit`` characters can never reach the output, and a 64 KiB line costs
    # what a 1 KiB one does (the check of the whole line was most of its time).
    cut = len(line) > limit
    if cut:
        line = line[:limit]
    if not line.isprintable():
        line = "".join(c if c.isprintable() else _escape(c) for c in line)
    if cut or len(line) > limit:
        line = line[: max(limit - 3, 0)] + "..."
    return line


def _escape(c: str) -> str:
    code = ord(c)
    if 0xDC80 <= code <= 0xDCFF:  # an undecodable byte, as surrogateescape keeps it
        return f"\\x{code - 0xDC00:02x}"
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


class ConsoleLog:
    """A line sink flushed at the end of each kernel tick.

    Args:
        kernel: whose ticks flush it.
        stream: where to write (stdout by default).
        max_backlog: bytes kept for a pipe reader that lags; more are dropped.
        max_line: characters per log line at most; longer ones are cut, marked "...".
    """

    __slots__ = (
        "_dropped",
        "_fd",
        "_loop",
        "_max_backlog",
        "_pending",
        "_plain",
        "_stream",
        "json",
        "lines",
        "max_line",
    )

    def __init__(
        self,
        kernel: Kernel,
        stream: TextIO | None = None,
        *,
        max_backlog: int = DEFAULT_MAX_BACKLOG,
        max_line: int = DEFAULT_MAX_LINE,
    ):
        self.max_line = max_line
        self._stream = stream
        self._fd: int | None = None  # set while writing a pipe without blocking
        self._pending = bytearray()
        self._dropped = 0
        self._max_backlog = max_backlog
        self._loop: asyncio.AbstractEventLoop | None = None
        self._plain = False  # stdout is known not to be a pipe: write it as usual
        #: Lines of this tick. Compiled ``log`` actions append to it directly: text,
        #: or in JSON format ``(time, session id, state, text)`` (see :mod:`.logs`).
        self.lines: list[Any] = []
        #: Whether lines are written as JSON objects, text from :meth:`write` too
        #: (set by ``build_server`` for a spec whose ``server.log.format`` is json).
        self.json = False
        kernel.add_tick_hook(self._flush)

    def write(self, line: str) -> None:
        """Log one line (without its newline)."""
        self.lines.append(line)

    def _flush(self) -> None:
        lines = self.lines
        if not lines:
            return
        limit = self.max_line
        data: bytes | None
        if self.json:
            text, data = self._json_text(lines, limit), None
        else:
            # The usual batch is short printable ASCII lines: checked at once,
            # lengths first, so that long lines are not scanned whole to be cut.
            data = None
            if max(map(len, lines)) <= limit:
                text = "\n".join(lines)
                if text.isascii():
                    data = text.encode("ascii")
            if data is None or len(data.translate(None, _SAFE)) != len(lines) - 1:
                for i, line in enumerate(lines):
                    if len(line) > limit or not line.isprintable():
                        lines[i] = clean(line, limit)
                text = "\n".join(lines)
                data = None
        lines.clear()  # in place: compiled actions hold lines.append
        if self._fd is None and (self._plain or not self._start_nonblocking()):
            stream = self._stream or sys.stdout
            stream.write(text + "\n")
            stream.flush()
            return
        if data is None:
            data = text.encode("utf-8", "surrogateescape")
        data += b"\n"
        if self._pending:
            self._keep(data)
            return
        written = self._write(data)
        if written < len(data):
            self._keep(data[written:])
            assert self._loop is not None and self._fd is not None
            self._loop.add_writer(self._fd, self._drain)

    @staticmethod
    def _json_text(lines: list[Any], limit: int) -> str:
        for i, entry in enumerate(lines):
            text = entry[3] if entry.__class__ is tuple else entry
            if len(text) > limit or not text.isprintable():
                text = clean(text, limit)
                entry = (*entry[:3], text) if entry.__class__ is tuple else text
            lines[i] = spec_line(entry)
        return "\n".join(lines)

    def _start_nonblocking(self) -> bool:
        stream = self._stream or sys.stdout
        try:
            fd = stream.fileno()
            mode = os.fstat(fd).st_mode
            loop = asyncio.get_running_loop()
        except (OSError, ValueError, AttributeError, RuntimeError):
            return False
        if not (stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)):
            self._plain = True
            return False
        stream.flush()  # what was printed before goes first
        os.set_blocking(fd, False)
        self._fd, self._loop = fd, loop
        return True

    def _write(self, data: bytes | bytearray) -> int:
        assert self._fd is not None
        try:
            return os.write(self._fd, data)
        except BlockingIOError:
            return 0
        except OSError as exc:  # the reader is gone: logging must not stop serving
            self._dropped += len(data)
            log.debug("console log: %s", exc)
            return len(data)

    def _keep(self, data: bytes) -> None:
        if len(self._pending) + len(data) > self._max_backlog:
            self._dropped += data.count(b"\n")
        else:
            self._pending += data

    def _drain(self) -> None:
        written = self._write(self._pending)
        del self._pending[:written]
        if not self._pending:
            assert self._loop is not None and self._fd is not None
            self._loop.remove_writer(self._fd)
            if self._dropped:
                log.warning("console log: %d lines dropped: stdout was not read", self._dropped)
                self._dropped = 0

    def close(self) -> None:
        """Write out what is left, blocking, and give stdout back its blocking mode."""
        self._flush()
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        if self._loop is not None and not self._loop.is_closed():
            self._loop.remove_writer(fd)
        try:
            os.set_blocking(fd, True)
            if self._pending:
                os.write(fd, self._pending)
        except OSError:
            pass
        self._pending.clear()
