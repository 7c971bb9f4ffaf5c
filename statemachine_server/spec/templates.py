"""Reply and log templates: ``"client {session.id}: {input}"``.

A template may name only these values, and nothing inside them: no attribute or
item traversal, no conversions, no format specs, so a template can never reach
into Python objects:

``{input}``           the record being handled (input handlers only)
``{session.id}``      the session's id
``{session.state}``   its lifecycle state
``{heap.NAME}``       a value from the session's heap (empty if unset)
``{remote_ip}``       the client's address
``{remote_port}``     the client's port

Templates are compiled once, at load time. When they name only fixed values the
result is a format string we write ourselves, such as ``"client {0.id}: {1}"``,
rendered as ``fmt.format(session, input)``: a single C call, no Python frame per
field. The user's text never becomes a format field itself (its braces are
escaped), so this adds no way in. ``{heap.NAME}`` needs a default for missing
keys, so such templates use one small getter per field instead.
"""

from __future__ import annotations

import string
from collections.abc import Callable
from typing import Any

__all__ = ["NAMES", "Template", "compile_template", "is_identity"]

Getter = Callable[[Any, Any], Any]
#: Renders a template for ``(session, input)``.
Template = Callable[[Any, Any], str]

# Each fixed name as a field of fmt.format(session, input).
_FIELDS: dict[str, str] = {
    "input": "{1}",
    "session.id": "{0.id}",
    "session.state": "{0.state}",
    "remote_ip": "{0.remote_ip}",
    "remote_port": "{0.remote_port}",
}
_FIXED: dict[str, Getter] = {
    "input": lambda s, i: i,
    "session.id": lambda s, i: s.id,
    "session.state": lambda s, i: s.state,
    "remote_ip": lambda s, i: s.remote_ip,
    "remote_port": lambda s, i: s.remote_port,
}
#: Every name a template may use; ``heap.NAME`` takes any identifier for NAME.
NAMES = (*_FIXED, "heap.NAME")


def _heap_getter(key: str) -> Getter:
    return lambda s, i: s.heap.get(key, "")


def compile_template(text: str, *, has_input: bool = True) -> Template:
    """Compile ``text`` into a function of ``(session, input)``.

    Args:
        text: the template.
        has_input: whether ``{input}`` exists where the template is used.

    Raises:
        ValueError: a malformed template, or a name it may not use.
    """
    literal: list[str] = []
    fast: list[str] = []
    getters: list[Getter] = []
    try:
        parsed = list(string.Formatter().parse(text))
    except ValueError as exc:
        raise ValueError(f"malformed template {text!r}: {exc}") from None
    for lit, field, spec, conversion in parsed:
        escaped = lit.replace("{", "{{").replace("}", "}}")
        literal.append(escaped)
        fast.append(escaped)
        if field is None:
            continue
        if conversion or spec:
            raise ValueError(
                f"template field {{{field}}}: conversions and format specs are not allowed"
            )
        getters.append(_getter(field, has_input))
        literal.append("{}")
        fast.append(_FIELDS.get(field, "\0"))
    if not getters:
        constant = text.replace("{{", "{").replace("}}", "}")
        return lambda s, i: constant
    fast_fmt = "".join(fast)
    if "\0" not in fast_fmt:
        return fast_fmt.format
    render = "".join(literal).format
    return lambda s, i: render(*[g(s, i) for g in getters])


def is_identity(text: str) -> bool:
    """Whether the template is exactly the record (``"{input}"``): send it as is."""
    return text == "{input}"


def _getter(field: str, has_input: bool) -> Getter:
    if field == "input" and not has_input:
        raise ValueError("{input} is only available in input handlers")
    getter = _FIXED.get(field)
    if getter is not None:
        return getter
    head, _, key = field.partition(".")
    if head == "heap" and key.isidentifier():
        return _heap_getter(key)
    hint = ", ".join("{" + n + "}" for n in NAMES)
    raise ValueError(f"unknown template name {{{field}}}: expected one of {hint}")
