"""Templates in replies, logs and other actions: ``"client {session.id}: {input}"``.

A template may name only these values, and nothing inside them: no attribute or
item traversal, no conversions, no format specs, so a template can never reach
into Python objects:

``{input}``           the record being handled (input and named-event handlers)
``{match.NAME}``      a named group of the rule's ``match`` (``rest`` for ``prefix``)
``{session.id}``      the session's id
``{session.state}``   its protocol state (its lifecycle state if the spec has none)
``{heap.NAME}``       a value from the session's heap (empty if unset)
``{server.NAME}``     a value from the server-wide heap (empty if unset)
``{remote_ip}``       the client's address
``{remote_port}``     the client's port
``{result}``          what the last ``call`` before it returned (empty for None)

Where a name is not available (``{input}`` in ``connected``, ``{match.x}`` when the
rule has no group ``x``, ``{result}`` before any ``call``) the template is refused
when the spec is loaded, as is any other name.

Templates are compiled once, at load time, into a ``%`` format string of our own
(the user's text with its ``%`` doubled, ``%s`` for each field, so no user text is
ever a format directive) and one small getter per field, called inline:
``"client %s: %s" % (s.id, i)`` in effect. That is about twice as fast as
``str.format`` with attribute fields (``"{0.id}"``), which parses the field name
at every call; a log line is rendered per message, so it counts.
"""

from __future__ import annotations

import string
from collections.abc import Callable, Collection
from typing import Any

__all__ = ["NAMES", "RESULT", "Template", "compile_template", "is_identity"]

Getter = Callable[[Any, Any, Any], Any]  # (session, input, match)
#: Renders a template for ``(session, input, match)``; ``match`` may be omitted
#: when the template names no ``{match.NAME}`` nor ``{result}``.
Template = Callable[..., str]

#: The key of ``{result}`` in the match dict: not an identifier, so no group clashes.
RESULT = " result"

_FIXED: dict[str, Getter] = {
    "input": lambda s, i, m: i,
    "session.id": lambda s, i, m: s.id,
    "session.state": lambda s, i, m: s.state,
    "remote_ip": lambda s, i, m: s.remote_ip,
    "remote_port": lambda s, i, m: s.remote_port,
}
#: Every name a template may use; NAME is an identifier not starting with "_".
NAMES = (
    "input", "match.NAME", "session.id", "session.state", "heap.NAME", "server.NAME",
    "remote_ip", "remote_port", "result",
)  # fmt: skip


def compile_template(
    text: str,
    *,
    has_input: bool = True,
    groups: Collection[str] | None = None,
    has_result: bool = False,
    states: bool = False,
    input_text: Callable[[Any], str] | None = None,
    raw: bool = False,
) -> Template:
    """Compile ``text`` into a function of ``(session, input, match)``.

    Args:
        text: the template.
        has_input: whether ``{input}`` exists where the template is used.
        groups: the ``{match.NAME}`` names the rule provides (None: not in a rule
            with a ``match`` or ``prefix`` condition).
        has_result: whether a ``call`` action ran before, in the same list.
        states: whether the spec declares protocol states (``{session.state}``).
        input_text: how ``{input}`` is written when records are not strings
            (structured filters: their JSON text).
        raw: a template that is one name alone gives that value itself, of
            whatever type (structured replies keep numbers numbers).

    Raises:
        ValueError: a malformed template, or a name it may not use.
    """
    literal: list[str] = []
    getters: list[Getter] = []
    try:
        parsed = list(string.Formatter().parse(text))
    except ValueError as exc:
        raise ValueError(f"malformed template {text!r}: {exc}") from None
    for lit, field, spec, conversion in parsed:
        literal.append(lit.replace("%", "%%"))
        if field is None:
            continue
        if conversion or spec:
            raise ValueError(
                f"template field {{{field}}}: conversions and format specs are not allowed"
            )
        getter = _field(field, has_input, groups, has_result, states)
        if raw and len(parsed) == 1 and not lit:
            return lambda s, i, m=None, _get=getter: _get(s, i, m)  # the value itself
        if input_text is not None and (field == "input" or field.startswith("match.")):
            # A record or a message's field inside a text: written as JSON (true,
            # null, [1, 2]), not as Python would (True, None).
            getter = _as_text(getter, input_text)
        getters.append(getter)
        literal.append("%s")
    if not getters:
        constant = text.replace("{{", "{").replace("}}", "}")
        return lambda s, i, m=None: constant
    return _render("".join(literal), getters)


def _as_text(get: Getter, text: Callable[[Any], str]) -> Getter:
    return lambda s, i, m: text(get(s, i, m))


def _render(fmt: str, getters: list[Getter]) -> Template:
    # One closure per number of fields, so that the common templates make no
    # tuple of getters to loop over: `%` with the values fetched inline.
    if len(getters) == 1:
        (g0,) = getters
        return lambda s, i, m=None: fmt % (g0(s, i, m),)
    if len(getters) == 2:
        g0, g1 = getters
        return lambda s, i, m=None: fmt % (g0(s, i, m), g1(s, i, m))
    if len(getters) == 3:
        g0, g1, g2 = getters
        return lambda s, i, m=None: fmt % (g0(s, i, m), g1(s, i, m), g2(s, i, m))
    return lambda s, i, m=None: fmt % tuple([g(s, i, m) for g in getters])


def is_identity(text: str) -> bool:
    """Whether the template is exactly the record (``"{input}"``): send it as is."""
    return text == "{input}"


def _field(
    field: str, has_input: bool, groups: Collection[str] | None, has_result: bool, states: bool
) -> Getter:
    if field == "input" and not has_input:
        raise ValueError(
            "{input} is only available in input and named-event handlers "
            "(and not in enter, exit or timeout actions)"
        )
    if field == "session.state" and states:
        return lambda s, i, m: s.protocol_state
    getter = _FIXED.get(field)
    if getter is not None:
        return getter
    if field == "result":
        if not has_result:
            raise ValueError(
                "{result} is only available after a call, work or run action in the same list"
            )
        return lambda s, i, m: m.get(RESULT, "")
    head, dot, key = field.partition(".")
    # Heap and group names are looked up as keys, never as attributes; names
    # starting with "_" are refused all the same, so no template even looks like
    # a way into Python objects.
    if dot and key.isidentifier() and not key.startswith("_"):
        if head == "heap":
            return lambda s, i, m: s.heap.get(key, "")
        if head == "server":
            return lambda s, i, m: s.server.heap.get(key, "")
        if head == "match":
            if groups is None:
                raise ValueError(
                    f"{{{field}}} is only available in a rule with a match or prefix condition"
                )
            if key not in groups:
                known = ", ".join(sorted(groups)) or "none"
                raise ValueError(f"{{{field}}}: the rule's condition has no group {key!r} "
                                 f"(its groups: {known})")  # fmt: skip
            return lambda s, i, m: m[key]
    hint = ", ".join("{" + n + "}" for n in NAMES)
    raise ValueError(f"unknown template name {{{field}}}: expected one of {hint}")
