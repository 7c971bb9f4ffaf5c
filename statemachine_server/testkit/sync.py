"""The kit for plain (sync) tests: the async API, each call run on the test's loop.

A sync test has no running loop, so each call here runs its coroutine to the
end on a loop the kit holds (the one pytest-asyncio made for the test, or one
of its own): the server's kernel runs *while a call runs* and waits between
calls. In memory with a virtual clock that changes nothing a test could see
(the server is idle between calls anyway: :meth:`Client.expect` returns once
it is); with a real clock or over TCP, time passes and bytes arrive while a
call waits, as they would in an async test between awaits.

:func:`serve` is the same outside pytest (a script, a notebook, the
``statemachine-server test`` command)::

    with serve("specs/chat.yaml") as server:
        alice = server.connect("alice")
        alice.expect("Welcome to chat. Your nick?")
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

from ..core.kernel import Kernel
from ..language import Spec
from ..net.server import TCPServer
from .client import AsyncClient, Expected
from .harness import AsyncSpecServer
from .janitor import Unclean
from .observe import Observer

__all__ = ["Client", "SpecServer", "serve"]

T = TypeVar("T")
#: Runs a coroutine to its end on the kit's loop.
Runner = Callable[[Coroutine[Any, Any, Any]], Any]


class Client:
    """One connection to a served spec, for sync tests: the methods of
    :class:`~.client.AsyncClient`, each returning when done."""

    def __init__(self, inner: AsyncClient, run: Runner):
        self.inner = inner
        self._run = run

    @property
    def name(self) -> str:
        return self.inner.name

    @property
    def received(self) -> list[Any]:
        """Every record received so far."""
        return self.inner.received

    @property
    def session(self) -> Any:
        """The server's session for this client (``heap``, ``protocol_state``...)."""
        return self.inner.session

    @property
    def closed(self) -> bool:
        """Whether the server closed the connection (and every record was taken)."""
        return self.inner.closed

    def send(self, *records: Any) -> None:
        """Send records (text, bytes, or values for JSON and MessagePack)."""
        self._run(self.inner.send(*records))

    def expect(self, expected: Expected, timeout: float | None = None, *, where: str = "") -> Any:
        """Take the next record; fail unless it is ``expected`` (see
        :meth:`~.client.AsyncClient.expect`)."""
        return self._run(self.inner.expect(expected, timeout, where=where))

    def expect_closed(self, timeout: float | None = None, *, where: str = "") -> None:
        """Fail unless the server closes the connection next."""
        self._run(self.inner.expect_closed(timeout, where=where))

    def send_eof(self) -> None:
        """End this client's input and keep reading."""
        self._run(self.inner.send_eof())

    def close(self) -> None:
        """Hang up."""
        self._run(self.inner.close())


class SpecServer:
    """A spec served for a sync test: the methods of
    :class:`~.harness.AsyncSpecServer`, each returning when done."""

    def __init__(self, inner: AsyncSpecServer, run: Runner):
        self.inner = inner
        self._run = run

    @property
    def server(self) -> TCPServer:
        """The running server (``heap``, ``statistics()``, ``port``)."""
        return self.inner.server

    @property
    def kernel(self) -> Kernel:
        return self.inner.kernel

    @property
    def spec(self) -> Spec:
        return self.inner.spec

    @property
    def log(self) -> list[str]:
        """The spec's ``log`` lines so far."""
        return self.inner.log

    @property
    def problems(self) -> list[str]:
        """Warnings and errors the server logged so far."""
        return self.inner.problems

    @property
    def observer(self) -> Observer | None:
        """What ran (rules, states, transitions), if observed."""
        return self.inner.observer

    def connect(self, name: str | None = None) -> Client:
        """A new client, connected."""
        return Client(self._run(self.inner.connect(name)), self._run)

    def advance(self, seconds: float) -> None:
        """Move the (virtual) clock on, firing the timers due on the way."""
        self._run(self.inner.advance(seconds))

    def stop(self) -> list[str]:
        """Close the clients and shut the server down; what was left behind."""
        found: list[str] = self._run(self.inner.stop())
        return found


async def _started(inner: AsyncSpecServer) -> AsyncSpecServer:
    return inner.start()


def start(inner: AsyncSpecServer, run: Runner) -> SpecServer:
    """Start ``inner`` on the loop ``run`` runs coroutines on."""
    run(_started(inner))
    return SpecServer(inner, run)


@contextlib.contextmanager
def serve(source: str | Path | Spec, *, check: bool = True, **options: Any) -> Iterator[SpecServer]:
    """Serve a spec on a loop of its own for the ``with`` block (options as
    :class:`~.harness.AsyncSpecServer` takes them). With ``check``, what the
    block left behind raises :class:`~.janitor.Unclean` at its end."""
    with asyncio.Runner() as runner:
        server = start(AsyncSpecServer(source, **options), runner.run)
        try:
            yield server
        finally:
            found = server.stop()
        if check and found:
            raise Unclean("the spec server was left with:\n" + "\n".join(f"  {f}" for f in found))
