"""What ``run`` loads from a spec file, at the start and at each reload."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..errors import SpecError
from ..language.model import Spec
from ..language.report import one_line

__all__ = ["Load", "Loaded", "load_or_report"]

log = logging.getLogger("statemachine_server")


@dataclass(frozen=True)
class Loaded:
    """A spec checked for serving.

    Attributes:
        spec: the spec, compiled.
        heap: the typed ``--set`` overrides of its ``server.heap``.
        source: the file's bytes, as read before checking them: what the workers
            of a supervisor run (:mod:`.worker`).
    """

    spec: Spec
    heap: dict[str, Any] = field(default_factory=dict)
    source: bytes = b""


#: Loads the spec again (``run``'s options and environment applied, as at the
#: start). Raises :class:`SpecError` (each error a line) or ``ValueError`` (one
#: line): the spec, an option that no longer fits it (``--set``), or a rule
#: (groups with several workers and no bus).
Load = Callable[[], Loaded]


def load_or_report(load: Load) -> Loaded | None:
    """The spec again for a reload, or None with why it is refused logged: one line
    per error (``FILE:LINE:COLUMN: message``) and that the running spec goes on.
    An unexpected exception is our bug: logged with its traceback, and the running
    server does not pay for it either."""
    try:
        return load()
    except (SpecError, ValueError) as exc:
        errors = exc.errors if isinstance(exc, SpecError) else [exc]
        for error in errors:
            line = error.where_and_what() if isinstance(error, SpecError) else str(error)
            log.error("reload: %s", line)
        log.error("reload: refused; the running spec keeps serving")
    except Exception as exc:
        log.error("reload: unexpected error: %s", one_line(exc), exc_info=exc)
    return None
