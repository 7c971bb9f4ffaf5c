"""Running a conversation script against a spec, and what came of it.

Each script runs on a server of its own (a fresh kernel, heap and clock), so a
script means the same alone or among others, in any order. Its clients connect
at their first step. The first expectation that fails ends the run; its
message starts with the script's ``FILE:LINE`` and names the spec rule that
answered when the kit could tell (:mod:`.observe`). At the end the server is
shut down, and what the conversation left behind fails it too (:mod:`.janitor`).
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..language import Spec
from .client import AsyncClient
from .expect import ExpectationFailed
from .harness import AsyncSpecServer
from .observe import Observer
from .script import Script, ScriptError, Step

__all__ = ["Outcome", "run_script"]


@dataclass
class Outcome:
    """What running one script gave."""

    script: Script
    #: The failure's message (None: it passed).
    failure: str | None = None
    #: Steps run (the failing one included).
    steps: int = 0
    #: What the server logged as warnings or errors meanwhile.
    problems: list[str] = field(default_factory=list)
    #: What ran, when observed.
    observer: Observer | None = None

    @property
    def ok(self) -> bool:
        return self.failure is None


async def run_script(
    script: Script,
    spec: str | Path | Spec | None = None,
    *,
    observe: bool = True,
    check: bool = True,
) -> Outcome:
    """Run ``script`` against ``spec`` (by default the one its header names).

    Args:
        check: fail the script for what it leaves behind.

    Raises:
        ScriptError: no spec given and none named in the script.
        SpecError: the spec is not valid.
    """
    source = spec if spec is not None else script.spec
    if source is None:
        raise ScriptError("no spec: give one, or name it in a `spec:` header", script.file)
    with tempfile.TemporaryDirectory(prefix="conv-") as tmp:
        heap = {name: _value(text.replace("{tmp}", tmp)) for name, text in script.heap.items()}
        options: dict[str, Any] = {
            "heap": heap,
            "server": script.server,
            "observe": observe,
            "transport": script.transport,
            "clock": script.clock,
        }
        if script.timeout is not None:
            options["timeout"] = script.timeout
        server = AsyncSpecServer(source, **options).start()
        outcome = Outcome(script, observer=server.observer)
        try:
            await _steps(script, server, outcome)
        finally:
            found = await server.stop()
        outcome.problems = list(server.problems)
        if check and found and outcome.failure is None:
            listed = "\n".join(f"  {line}" for line in found)
            outcome.failure = f"{script.file}: the conversation left behind:\n{listed}"
    return outcome


async def _steps(script: Script, server: AsyncSpecServer, outcome: Outcome) -> None:
    clients: dict[str, AsyncClient] = {}
    for step in script.steps:
        outcome.steps += 1
        where = script.where(step)
        try:
            client = clients.get(step.client)
            if client is None or (step.kind == "open" and client.hung_up):
                client = clients[step.client] = await server.connect(step.client)
                if step.kind == "open":
                    continue
            await _step(step, client, server, where)
        except ExpectationFailed as exc:
            outcome.failure = str(exc)
            return
        except RuntimeError as exc:  # e.g. sending on a client that hung up
            outcome.failure = f"{where}: {exc}"
            return


async def _step(step: Step, client: AsyncClient, server: AsyncSpecServer, where: str) -> None:
    if step.kind == "send":
        await client.send(step.value)
    elif step.kind == "raw":
        await client.send(step.value.encode("utf-8", "surrogateescape"))
    elif step.kind == "expect":
        await client.expect(step.value, where=where)
    elif step.kind == "closed":
        await client.expect_closed(where=where)
    elif step.kind == "advance":
        await server.advance(step.value)
    elif step.kind == "close":
        await client.close()
    elif step.kind == "eof":
        await client.send_eof()
    # "open" on a connected client: nothing to do


def _value(text: str) -> Any:
    """A ``heap:`` value: YAML (a number stays a number), text if it is not YAML."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text
