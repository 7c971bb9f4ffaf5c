"""Templates in replies, logs and other actions: ``"client {session.id}: {input}"``.

Each ``{...}`` field is an expression of the expression language
(:mod:`.expressions`): a name such as ``{input}``, ``{match.NAME}``,
``{heap.NAME}``, ``{server.NAME}``, ``{session.id}``, ``{session.state}``,
``{remote_ip}``, ``{remote_port}``, ``{result}``, or any expression over them,
``{heap.count + 1}``, ``{len(heap.items)}``, ``{"yes" if heap.ok else "no"}``.
A value is written as text: text as it is, null (an unset heap value) as
nothing, booleans as ``true``/``false``, lists and maps as JSON. There are no
conversions or format specs, and nothing reaches into Python objects. ``{{`` and
``}}`` are literal braces.

Where a name is not available (``{input}`` in ``connected``, ``{match.x}`` when the
rule has no group ``x``, ``{result}`` before any ``call``) the template is refused
when the spec is loaded, with the offset of the field, as is any unknown name.

Templates are compiled once, at load time, into one Python expression:
``"client {session.id}: {input}"`` becomes ``f"{_t0}{s.id!s}{_t1}{i!s}"``, where
``_t0`` and ``_t1`` are bound to ``"client "`` and ``": "``. The expression is made
only of the fixed fragments in ``_FIXED`` and ``_field``, the expression
compiler's, and generated names; everything from the spec (literal text, heap
keys, group names) is bound to those names as a value and is never part of the
source. A log line is rendered per message, so it counts: the f-string is about
1.3x as fast as ``%`` and 2.5x as fast as ``str.format`` with attribute fields,
and an expression inlined into the handler (see :mod:`.codegen`) saves a call
per field and per action. The expression becomes a function in :mod:`.generated`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection
from typing import Any

from .expressions import RESULT, SIMPLE, ExprError, Names, compile_expression, split_template
from .functions import text as text_of
from .generated import Sources, build_function

__all__ = [
    "NAMES", "RESULT", "Template", "TemplateCode", "compile_guard", "compile_template",
    "is_identity",
    "template_code",
]  # fmt: skip

#: Renders a template for ``(session, input, match)``; ``match`` may be omitted
#: when the template names no ``{match.NAME}`` nor ``{result}``.
Template = Callable[..., str]

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
    names: Names | None = None,
    setup: list[str] | None = None,
) -> TemplateCode:
    """Compile ``text`` into a :class:`TemplateCode` (arguments as :func:`compile_template`).

    With ``hoist``, each run of literal text and fields that stay the same for a
    connection (``{session.id}``, ``{remote_ip}``...) is rendered once into a
    local: the assignment is appended to ``hoist``, to run before a loop over
    records, and the expression names the local. A log line such as
    ``client {session.id}: {input}`` is then one join per record, not a join
    and an int-to-str conversion.

    With ``setup`` (a snippet's statements), a field of any type whose value is
    not a plain name is computed into a local first, so that writing it as text
    reads it once.

    Raises:
        ExprError: a malformed template or field, with its offset in ``text``.
    """
    if names is None:
        names = Names(
            has_input=has_input, groups=groups, has_result=has_result, states=states,
            text_input=input_text is None,
        )  # fmt: skip
    code = TemplateCode(values, prefix)
    texts = [""]  # the literal text around the fields: one more than there are fields
    fields: list[str] = []  # the fields' expressions
    strs: set[str] = set()  # fields known to be a str already
    parsed = split_template(text)
    for lit, field, offset in parsed:
        texts[-1] += lit
        if field is None:
            continue
        try:
            expr, is_text = _field(code, field.strip(), names)
        except ExprError as exc:
            lead = len(field) - len(field.lstrip())
            raise ExprError(str(exc), offset + lead + exc.offset) from None
        if raw and len(parsed) == 1 and not lit:
            code.expr = expr  # the value itself
            return code
        if is_text is None:
            # Any value: written as text (null as nothing, true, lists as JSON);
            # text itself without a call (the common case: a heap value, an item).
            if setup is not None and not _LOCAL.fullmatch(expr):
                local = f"{code.prefix}f{len(setup)}"
                setup.append(f"{local} = {expr}")
                expr = local
            if SIMPLE.fullmatch(expr):
                str_ = code.name(str)
                expr = f"({expr} if {expr}.__class__ is {str_} else {code.name(text_of)}({expr}))"
            else:
                expr = f"{code.name(text_of)}({expr})"
            strs.add(expr)
        elif input_text is not None and is_text is False:
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
    code.expr = _join(code, texts, fields, hoisted | strs)
    return code


_LOCAL = re.compile(r"\w+")

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
    if not fields:
        return code.name(texts[0])  # constant text: the str itself
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
    names: Names | None = None,
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
        names: what the fields may name (instead of the arguments above but
            ``input_text``), e.g. with a ``foreach`` variable.

    Raises:
        ExprError: a malformed template, or a name it may not use (a ValueError
            whose ``offset`` is where in ``text``).
    """
    values: dict[str, Any] = {}
    code = template_code(
        text, values, has_input=has_input, groups=groups, has_result=has_result,
        states=states, input_text=input_text, raw=raw, names=names,
    )  # fmt: skip
    source = f"_f = lambda s, i, m=None: {code.expr}\n"
    if sources is None:
        return build_function(source, values, "<template>")
    return sources.function(source, values, where)


def compile_guard(
    text: str, names: Names, sources: Sources | None = None, where: str = "expression"
) -> Callable[..., Any]:
    """Compile the expression ``text`` into a function of ``(session, input, match)``
    giving its value (a rule's ``if``, a ``foreach``'s list).

    Raises:
        ExprError: what is wrong in ``text``, and where.
    """
    values: dict[str, Any] = {}
    code = TemplateCode(values, "e")
    typed = compile_expression(text, names, code.name)
    source = f"_f = lambda s, i, m=None: {typed.source}\n"
    if sources is None:
        return build_function(source, values, "<expression>")
    return sources.function(source, values, where)


def is_identity(text: str) -> bool:
    """Whether the template is exactly the record (``"{input}"``): send it as is."""
    return text == "{input}"


def _field(code: TemplateCode, field: str, names: Names) -> tuple[str, bool | None]:
    """A field's Python expression, and whether it is text: True (the fixed
    names, written with ``!s``), False (the record or a match group, which a
    structured filter writes as JSON), None (any other value: :func:`text_of`)."""
    if field == "session.state" and names.states:
        return "s.protocol_state", True
    expr = _FIXED.get(field)
    if expr is not None:
        if field == "input":
            if not names.has_input:
                raise ExprError(
                    "{input} is only available in input and named-event handlers "
                    "(and not in enter, exit or timeout actions)"
                )
            if names.typed_input:
                return "i", None  # any value: written as text_of() writes it
            return expr, False
        return expr, True
    if field == "result":
        if not names.has_result:
            raise ExprError(
                "{result} is only available after a call, work or run action in the same list"
            )
        return f"m.get({code.name(RESULT)}, '')", True
    head, dot, key = field.partition(".")
    if head == "match" and dot and key.isidentifier() and names.groups and key in names.groups:
        return f"m[{code.name(key)}]", False
    if re.search(r"![rsa]$", field) or re.fullmatch(r"[\w.]+:[^\]]*", field):
        raise ExprError(f"{{{field}}}: conversions and format specs are not allowed "
                        "(a field is an expression: {len(x)}, {x + 1})")  # fmt: skip
    # Anything else is an expression (heap and server values keep their types).
    typed = compile_expression(field, names, code.name)
    return typed.source, (True if typed.type == "text" else None)
