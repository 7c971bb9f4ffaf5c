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

Templates are compiled once, at load time, into one Python expression:
``"client {session.id}: {input}"`` becomes ``f"{_t0}{s.id!s}{_t1}{i!s}"``, where
``_t0`` and ``_t1`` are bound to ``"client "`` and ``": "``. The expression is made
only of the fixed fragments in ``_FIXED`` and ``_field`` and of generated names;
everything from the spec (literal text, heap keys, group names) is bound to those
names as a value and is never part of the source. A log line is rendered per
message, so it counts: the f-string is about 1.3x as fast as ``%`` and 2.5x as
fast as ``str.format`` with attribute fields, and an expression inlined into the
handler (see :mod:`.codegen`) saves a call per field and per action. The
expression becomes a function in :mod:`.generated`.
"""

from __future__ import annotations

import string
from collections.abc import Callable, Collection
from typing import Any

from .generated import Sources, build_function

__all__ = [
    "NAMES", "RESULT", "Template", "TemplateCode", "compile_template", "is_identity",
    "template_code",
]  # fmt: skip

#: Renders a template for ``(session, input, match)``; ``match`` may be omitted
#: when the template names no ``{match.NAME}`` nor ``{result}``.
Template = Callable[..., str]

#: The key of ``{result}`` in the match dict: not an identifier, so no group clashes.
RESULT = " result"

# Each fixed name as the Python expression that fetches it from the handler's
# arguments: ``s`` the session, ``i`` the record, ``m`` the match dict. These
# expressions, and the names of constants, are the only source text a template
# ever becomes; the user's text travels as values (see TemplateCode).
_FIXED: dict[str, str] = {
    "input": "i",
    "session.id": "s.id",
    "session.state": "s.state",
    "remote_ip": "s.remote_ip",
    "remote_port": "s.remote_port",
}
#: Every name a template may use; NAME is an identifier not starting with "_".
NAMES = (
    "input", "match.NAME", "session.id", "session.state", "heap.NAME", "server.NAME",
    "remote_ip", "remote_port", "result",
)  # fmt: skip


class TemplateCode:
    """A template as one Python expression of ``s``, ``i`` and ``m``.

    ``expr`` is built only from the fixed expressions above and from names of
    ``values`` (the user's literal text, heap keys, group names, helpers), so no
    part of a spec is ever source code. Several templates compiled into one
    function share a ``values`` dict; ``prefix`` keeps their names apart.
    """

    __slots__ = ("expr", "prefix", "values")

    def __init__(self, values: dict[str, Any], prefix: str):
        self.expr = ""
        self.values = values
        self.prefix = prefix

    def name(self, value: Any) -> str:
        """A name in the generated code bound to ``value``."""
        name = f"_{self.prefix}{len(self.values)}"
        self.values[name] = value
        return name


def template_code(
    text: str,
    values: dict[str, Any],
    *,
    prefix: str = "t",
    has_input: bool = True,
    groups: Collection[str] | None = None,
    has_result: bool = False,
    states: bool = False,
    input_text: Callable[[Any], str] | None = None,
    raw: bool = False,
    hoist: list[str] | None = None,
) -> TemplateCode:
    """Compile ``text`` into a :class:`TemplateCode` (arguments as :func:`compile_template`).

    With ``hoist``, each run of literal text and fields that stay the same for a
    connection (``{session.id}``, ``{remote_ip}``...) is rendered once into a
    local: the assignment is appended to ``hoist``, to run before a loop over
    records, and the expression names the local. A log line such as
    ``client {session.id}: {input}`` is then one join per record, not a join
    and an int-to-str conversion.
    """
    code = TemplateCode(values, prefix)
    texts = [""]  # the literal text around the fields: one more than there are fields
    fields: list[str] = []  # the fields' expressions
    try:
        parsed = list(string.Formatter().parse(text))
    except ValueError as exc:
        raise ValueError(f"malformed template {text!r}: {exc}") from None
    for lit, field, spec, conversion in parsed:
        texts[-1] += lit
        if field is None:
            continue
        if conversion or spec:
            raise ValueError(
                f"template field {{{field}}}: conversions and format specs are not allowed"
            )
        expr = _field(code, field, has_input, groups, has_result, states)
        if raw and len(parsed) == 1 and not lit:
            code.expr = expr  # the value itself
            return code
        if input_text is not None and (field == "input" or field.startswith("match.")):
            # A record or a message's field inside a text: written as JSON (true,
            # null, [1, 2]), not as Python would (True, None).
            expr = f"{code.name(input_text)}({expr})"
        fields.append(expr)
        texts.append("")
    hoisted: set[str] = set()  # locals that hold a str already
    if hoist is not None:
        texts, fields = _hoisted(code, texts, fields, hoist, hoisted)
        if texts == ["", ""] and fields[0] in hoisted:
            code.expr = fields[0]  # all of it the same for the whole loop: that str
            return code
    code.expr = _join(code, texts, fields, hoisted)
    return code


# Above this many fields a template is compiled to `%` instead of an f-string.
_FSTRING_FIELDS = 64
# Fields whose value is a str or an int that a loop over one read's records
# cannot change (only replies and logs run in such a loop): see ``hoist``. Only
# plain attributes of those types: rendered before the loop's error handling,
# their str() must not be able to raise.
_INVARIANT = frozenset({"s.id", "s.state", "s.remote_ip", "s.remote_port", "s.protocol_state"})


def _join(
    code: TemplateCode, texts: list[str], fields: list[str], strs: Collection[str] = ()
) -> str:
    """The expression that joins ``texts[0] fields[0] texts[1] ... texts[-1]``
    (``strs``: fields known to be a str, which need no conversion)."""
    if len(fields) <= _FSTRING_FIELDS:
        # An f-string of names and fields: Python builds it in one step
        # (BUILD_STRING), faster than `%` or str.format; `!s` is str(), as `%s` is.
        parts = [code.name(texts[0])] if texts[0] else []
        for expr, text in zip(fields, texts[1:], strict=True):
            parts.append(expr if expr in strs else f"{expr}!s")
            if text:
                parts.append(code.name(text))
        return 'f"' + "".join("{" + part + "}" for part in parts) + '"'
    # CPython compiles an f-string in time quadratic in its fields (20,000 took
    # seconds); `%` with the format string as a value is linear.
    pattern = "%s".join(t.replace("%", "%%") for t in texts)
    return f"{code.name(pattern)} % ({''.join(f + ', ' for f in fields)})"


def _hoisted(
    code: TemplateCode, texts: list[str], fields: list[str], hoist: list[str], hoisted: set[str]
) -> tuple[list[str], list[str]]:
    """``texts`` and ``fields`` with each run of invariant fields, and the text
    around them, replaced by a local (added to ``hoisted``) that ``hoist``'s new
    assignment renders."""
    out_texts, out_fields = [texts[0]], []
    i = 0
    while i < len(fields):
        if fields[i] not in _INVARIANT:
            out_fields.append(fields[i])
            out_texts.append(texts[i + 1])
            i += 1
            continue
        j = i
        while j < len(fields) and fields[j] in _INVARIANT:
            j += 1
        # The run fields[i:j], the text before it (already out_texts[-1]) and after.
        local = f"_{code.prefix}h{len(hoist)}"  # a generated name, as every name is
        run = _join(code, [out_texts[-1], *texts[i + 1 : j], texts[j]], fields[i:j])
        hoist.append(f"{local} = {run}")
        hoisted.add(local)
        out_texts[-1] = ""
        out_fields.append(local)
        out_texts.append("")
        i = j
    return out_texts, out_fields


def compile_template(
    text: str,
    *,
    has_input: bool = True,
    groups: Collection[str] | None = None,
    has_result: bool = False,
    states: bool = False,
    input_text: Callable[[Any], str] | None = None,
    raw: bool = False,
    sources: Sources | None = None,
    where: str = "template",
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
        sources: the spec's generated functions, which this one joins as
            ``where`` (the node's dotted path); none: ``<template>``.
        where: see ``sources``.

    Raises:
        ValueError: a malformed template, or a name it may not use.
    """
    values: dict[str, Any] = {}
    code = template_code(
        text, values, has_input=has_input, groups=groups, has_result=has_result,
        states=states, input_text=input_text, raw=raw,
    )  # fmt: skip
    source = f"_f = lambda s, i, m=None: {code.expr}\n"
    if sources is None:
        return build_function(source, values, "<template>")
    return sources.function(source, values, where)


def is_identity(text: str) -> bool:
    """Whether the template is exactly the record (``"{input}"``): send it as is."""
    return text == "{input}"


def _field(
    code: TemplateCode,
    field: str,
    has_input: bool,
    groups: Collection[str] | None,
    has_result: bool,
    states: bool,
) -> str:
    if field == "input" and not has_input:
        raise ValueError(
            "{input} is only available in input and named-event handlers "
            "(and not in enter, exit or timeout actions)"
        )
    if field == "session.state" and states:
        return "s.protocol_state"
    expr = _FIXED.get(field)
    if expr is not None:
        return expr
    if field == "result":
        if not has_result:
            raise ValueError(
                "{result} is only available after a call, work or run action in the same list"
            )
        return f"m.get({code.name(RESULT)}, '')"
    head, dot, key = field.partition(".")
    # Heap and group names are looked up as keys, never as attributes; names
    # starting with "_" are refused all the same, so no template even looks like
    # a way into Python objects.
    if dot and key.isidentifier() and not key.startswith("_"):
        if head == "heap":
            return f"s.heap.get({code.name(key)}, '')"
        if head == "server":
            return f"s.server.heap.get({code.name(key)}, '')"
        if head == "match":
            if groups is None:
                raise ValueError(
                    f"{{{field}}} is only available in a rule with a match or prefix condition"
                )
            if key not in groups:
                known = ", ".join(sorted(groups)) or "none"
                raise ValueError(f"{{{field}}}: the rule's condition has no group {key!r} "
                                 f"(its groups: {known})")  # fmt: skip
            return f"m[{code.name(key)}]"
    hint = ", ".join("{" + n + "}" for n in NAMES)
    raise ValueError(f"unknown template name {{{field}}}: expected one of {hint}")
