"""examples/jobs_server.py, run as a user would: its own process, every command,
two clients at once."""

from __future__ import annotations

import asyncio
import hashlib
import signal
import sys
from pathlib import Path

from conftest import TIMEOUT

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "jobs_server.py"


async def lines(reader: asyncio.StreamReader, count: int) -> list[str]:
    async with asyncio.timeout(TIMEOUT * 2):
        return [(await reader.readline()).decode().rstrip("\n") for _ in range(count)]


async def test_every_command_and_nobody_waits() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(EXAMPLE), "0", stdout=asyncio.subprocess.PIPE
    )
    try:
        assert proc.stdout is not None
        async with asyncio.timeout(TIMEOUT):
            port = int((await proc.stdout.readline()).decode().rsplit(":", 1)[1])
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        other_reader, other_writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"primes 30000\nafter\n")
        other_writer.write(b"hello\n")  # answered while the job runs
        assert await lines(other_reader, 1) == ["hello"]
        # Progress is rate-limited (a line per 0.5 s): this job is quicker than that.
        got = await lines(reader, 3)
        assert got == ["... 10000 checked, 1229 primes so far", "primes: 3245", "after"]
        writer.write(b"sleep 0.05\nhash abc\nshell\n")
        got = await lines(reader, 4)
        expected = hashlib.scrypt(b"abc", salt=b"example", n=1 << 14, r=8, p=1).hex()[:32]
        assert got[:2] == ["sleep: slept 0.05 s", f"hash: {expected}"]
        assert got[2].startswith("shell: Linux") and got[3] == "shell: exit 0"
        writer.close()
        other_writer.close()
        proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(TIMEOUT):
            assert await proc.wait() == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
