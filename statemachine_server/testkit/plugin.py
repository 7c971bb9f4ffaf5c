"""The pytest plugin: the ``spec_server`` and ``janitor`` fixtures, and conversation scripts.

Installed with the package (the ``pytest11`` entry point), so a project that
depends on statemachine-server has, in its tests:

* ``spec_server(SPEC, heap=..., server=..., transport="memory"|"tcp",
  clock="virtual"|"real")``: the spec, served for this test. In an ``async def``
  test it is an :class:`~.harness.AsyncSpecServer` (``await client.expect(...)``);
  in a plain test a :class:`~.sync.SpecServer` (``client.expect(...)``): the
  kit looks at the test function to know which it is. After the test its
  clients are closed, the server is shut down, and the janitor checks that
  nothing was left behind.
* ``janitor``: the same check for a test's own kernels: ``janitor.watch(kernel)``.
  A test that means to leave something running is marked
  ``@pytest.mark.allow_leftovers(reason=...)``. A test that failed already is
  not failed again for what it left.
* files named ``test_*.conv`` are collected as conversation scripts
  (:mod:`.script`), one test per file.

Async tests need pytest-asyncio (as any async test does); with it, the
fixtures are async fixtures and share the test's loop, so sync tests run on
that loop too. Without it, sync tests get a loop of the kit's own.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator, Callable, Generator, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from ..language import Spec
from .harness import AsyncSpecServer
from .janitor import Janitor, leftovers_message, settle
from .sync import Runner, start

asyncio_plugin: Any
try:  # the fixtures share the test's loop with it
    import pytest_asyncio as asyncio_plugin
except ImportError:  # pragma: no cover - pytest-asyncio is in the test extra
    asyncio_plugin = None

__all__ = [
    "janitor",
    "judge",
    "pytest_collect_file",
    "pytest_configure",
    "pytest_runtest_makereport",
    "spec_server",
]

_FAILED = pytest.StashKey[bool]()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "allow_leftovers(reason): the janitor does not fail this test for the sessions, "
        "timers, jobs, processes or sockets it leaves behind",
    )


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    if report.when == "call" and report.failed:
        item.stash[_FAILED] = True
    return report


def pytest_collect_file(parent: pytest.Collector, file_path: Path) -> pytest.Collector | None:
    if file_path.suffix == ".conv" and file_path.name.startswith("test_"):
        from .pytest_scripts import ScriptFile

        return ScriptFile.from_parent(parent, path=file_path)
    return None


class _Served:
    """The servers one test started, and their check at its end."""

    def __init__(self, request: pytest.FixtureRequest, run: Runner | None):
        self.request = request
        self.run = run  # None: an async test, which awaits the servers itself
        self.servers: list[AsyncSpecServer] = []
        self.janitor = Janitor()

    def factory(self) -> Callable[..., Any]:
        def spec_server(source: str | Path | Spec, **options: Any) -> Any:
            inner = AsyncSpecServer(source, **options)
            self.servers.append(inner)
            if self.run is None:
                return inner.start()
            return start(inner, self.run)

        return spec_server

    async def finish(self) -> None:
        found: list[str] = []
        for inner in self.servers:
            found += await inner.stop()
        found += await settle(self.janitor.report)
        judge(self.request, found)


def judge(request: pytest.FixtureRequest, found: list[str]) -> None:
    """Fail the test for ``found``, unless it is marked ``allow_leftovers`` or
    failed already (what a failed test leaves is no news)."""
    node = request.node
    if not found or node.get_closest_marker("allow_leftovers") or node.stash.get(_FAILED, False):
        return
    pytest.fail(leftovers_message(found), pytrace=False)


def _is_async(request: pytest.FixtureRequest) -> bool:
    function = getattr(request, "function", None)
    return function is not None and inspect.iscoroutinefunction(function)


F = TypeVar("F", bound=Callable[..., Any])


def _async_fixture(function: F) -> F:
    fixture: F = asyncio_plugin.fixture(function)
    return fixture


if asyncio_plugin is not None:

    @_async_fixture
    async def spec_server(request: pytest.FixtureRequest) -> AsyncIterator[Callable[..., Any]]:
        """``spec_server(SPEC, **options)``: the spec served for this test (see the
        module docstring); options as :class:`~.harness.AsyncSpecServer` takes them."""
        loop = asyncio.get_running_loop()
        served = _Served(request, None if _is_async(request) else loop.run_until_complete)
        yield served.factory()
        await served.finish()

    @_async_fixture
    async def janitor(request: pytest.FixtureRequest) -> AsyncIterator[Janitor]:
        """Fails the test if it leaves sessions, timers, jobs, processes or sockets
        behind (``janitor.watch(kernel)`` adds a kernel to look at)."""
        keeper = Janitor()
        yield keeper
        found = await keeper.settle()
        judge(request, found)

else:  # pragma: no cover - exercised only without pytest-asyncio

    @pytest.fixture
    def spec_server(request: pytest.FixtureRequest) -> Iterator[Callable[..., Any]]:
        """As above, for sync tests, on a loop of the kit's own."""
        with asyncio.Runner() as runner:
            served = _Served(request, runner.run)
            yield served.factory()
            runner.run(served.finish())

    @pytest.fixture
    def janitor(request: pytest.FixtureRequest) -> Generator[Janitor, None, None]:
        """As above, for sync tests."""
        from .janitor import wait_settled

        keeper = Janitor()
        yield keeper
        judge(request, wait_settled(keeper.report))
