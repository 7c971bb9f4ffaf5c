"""Reading a spec's YAML into a node tree: bounded in depth, fast where it can be.

The first step of loading (:mod:`.loader` turns the nodes into plain data with
their positions): PyYAML's composer over libyaml's scanner and parser where
they read the text alike (a quarter of the time), PyYAML's own otherwise, whose
messages every error gives; collections nested deeper than :data:`MAX_DEPTH` are
one error at the node that goes too deep.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import yaml

from ..errors import SpecError

__all__ = ["MAX_DEPTH", "Fast", "Reference", "compose", "compose_with"]

#: Collections nested deeper than this are refused, at the node that goes too
#: deep. PyYAML's composer recurses once per level, so without a bound a 1 MiB
#: spec of ``[`` ends in a RecursionError that says nowhere. Precedents: SnakeYAML
#: refuses more than 50 levels (``nestingDepthLimit``), serde_yaml more than 128;
#: the bundled specs' deepest is 14 (memcache-lite).
MAX_DEPTH = 100


class _TooDeep(Exception):
    def __init__(self, mark: Any):
        self.mark = mark


class _Bounded(yaml.composer.Composer):
    """PyYAML's composer, refusing collections nested deeper than :data:`MAX_DEPTH`."""

    depth = 0
    peek_event: Callable[[], yaml.Event]  # the parser's, beside it in the loader

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.peek_event()
        if not isinstance(event, yaml.SequenceStartEvent | yaml.MappingStartEvent):
            return super().compose_node(parent, index)
        if self.depth == MAX_DEPTH:
            raise _TooDeep(event.start_mark)
        self.depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1


class Reference(_Bounded, yaml.SafeLoader):
    """The reference: PyYAML's own scanner and parser, whose messages errors give."""


#: Where libyaml reads what PyYAML refuses, or reads it otherwise: tabs (PyYAML
#: refuses more of them), tags (``!``, ``!x``, ``!*a``) and a comment right after
#: a block scalar's indicator (``|#``). Such a spec is read by PyYAML alone.
_LIBYAML_DIFFERS = re.compile(r"\t|(?<![^\s\[{,])!|[|>][-+0-9]*#")

Fast: Any = None
if yaml.__with_libyaml__:
    from yaml._yaml import CParser

    class Fast(_Bounded, CParser, yaml.resolver.Resolver):  # type: ignore[no-redef]
        """libyaml's scanner and parser under the same composer: a quarter of the
        time (measured on a spec of 10,000 states: 0.46 s instead of 2.0 s, where
        the pure-Python scanner was most of loading it)."""

        def __init__(self, text: str):
            CParser.__init__(self, text)
            _Bounded.__init__(self)
            yaml.resolver.Resolver.__init__(self)


def compose(text: str, file: str) -> yaml.Node | None:
    """The spec's YAML node tree, or :class:`SpecError` with a position."""
    try:
        if Fast is not None and not _LIBYAML_DIFFERS.search(text):
            try:
                return compose_with(Fast, text)
            except (yaml.YAMLError, ValueError):
                # libyaml words its errors its own way: the reference says it
                # again, as the messages have always read.
                pass
        return compose_with(Reference, text)
    except _TooDeep as exc:
        raise SpecError(
            f"YAML nested deeper than {MAX_DEPTH} levels", file, exc.mark.line + 1,
            exc.mark.column + 1,
        ) from None  # fmt: skip
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or exc.context or "invalid YAML"
        line, column = (mark.line + 1, mark.column + 1) if mark else (0, 0)
        raise SpecError(f"invalid YAML: {problem}", file, line, column) from None
    except (yaml.YAMLError, ValueError) as exc:
        # ValueError: e.g. an int too long to convert.
        raise SpecError(f"invalid YAML: {type(exc).__name__}", file) from None


def compose_with(loader: Any, text: str) -> yaml.Node | None:
    composer = loader(text)
    try:
        node: yaml.Node | None = composer.get_single_node()
        return node
    finally:
        composer.dispose()
