"""The expression language: guards, computed values and template fields, compiled to Python.

One language for every place a spec computes something: a rule's ``if``, the
values of ``set`` and ``append``, a ``foreach``'s list, and each ``{...}`` field
of a template. Its look is Python's (and mostly CEL's): ``heap.count + 1``,
``input == server.password``, ``match.key in server.items``,
``len(heap.rcpts) < 100 and not heap.busy``, ``"yes" if heap.ok else "no"``.
``docs/expressions.md`` is the reference.

Why Python's grammar: spec authors read it already (``call`` targets are Python),
the parser is the interpreter's own (exact positions, nothing to maintain), and
the result compiles to Python that runs as fast as hand-written code: a
three-comparison guard costs what the same ``lambda`` does (the CEL library
``common-expression-language`` took 16 us per evaluation here, ``cel-python``
420 us, a compiled Python function 0.24 us). CEL's look is kept where it helps:
``true``, ``false`` and ``null``; namespaces written with dots; no statements.

Safe by construction, by what is *accepted*, not by what is refused: the parse
tree is walked and each node must be one of a short list (literals, the spec's
names, comparisons, ``and``/``or``/``not``, arithmetic, ``in``, indexing and
slicing, ``x if c else y``, list and map literals, calls of the fixed functions
in :mod:`.functions`). A dotted name is a namespace lookup (``heap.NAME`` is a
key of the session's heap), never an attribute of a Python object; there are no
loops, lambdas, comprehensions or ``**``; ``*`` and ``%`` take numbers only (text
repeated a client-chosen number of times would be a way to fill the memory).
The generated source is made of fixed fragments and generated names, as the
templates' is: every literal from the spec is bound as a value.

Errors are found when the spec is loaded, each with the offset of the node in
the expression's text (the loader turns it into ``FILE:LINE:COLUMN``): a syntax
error, an unknown name or function (with the closest known one), a name not
available there (``input`` in ``enter`` actions, a ``match`` group the rule does
not have), a wrong number of arguments, and a type error that can be known from
the literals and functions alone (``"a" + 1``, ``len(3)``). Others (``heap.n +
1`` when the heap holds text) raise at run time: the connection's ``error``.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Callable, Collection
from dataclasses import dataclass, field, replace
from typing import Any

from .functions import FUNCTIONS, SIGNATURES, multiply, remainder
from .report import hint

__all__ = [
    "RESULT", "SIMPLE", "ExprError", "Location", "Names", "Typed", "compile_expression",
    "compile_location", "regex_fields", "split_template",
]  # fmt: skip

#: The key of ``result`` in the match dict: not an identifier, so no group clashes.
RESULT = " result"

#: Binds a value to a new name in generated code and returns the name.
Bind = Callable[[Any], str]


class ExprError(ValueError):
    """An error in an expression, ``offset`` characters into its text."""

    def __init__(self, message: str, offset: int = 0):
        super().__init__(message)
        self.offset = offset


@dataclass(frozen=True)
class Names:
    """What an expression may name where it is used."""

    #: ``input`` exists (input and named-event handlers).
    has_input: bool = True
    #: The rule's ``match.NAME`` groups (None: no match, prefix or message condition).
    groups: Collection[str] | None = None
    #: ``result`` exists (after a call, work or run in the same list).
    has_result: bool = False
    #: The spec declares protocol states (``session.state`` is the protocol state).
    states: bool = False
    #: ``input`` is text (a text filter): its type is known.
    text_input: bool = True
    #: ``input`` may be any value (a named event's: ``raise`` and ``post`` keep
    #: types), so a template writes it as :func:`~.functions.text` does.
    typed_input: bool = False
    #: ``foreach`` variables in scope, by name.
    locals: frozenset[str] = frozenset()
    #: Functions beyond :data:`~.functions.FUNCTIONS` (the runtime's, such as
    #: ``group_size``): name to (function, signature).
    extra: dict[str, tuple[Callable[..., Any], tuple[tuple[str, ...], int, str]]] = field(
        default_factory=dict
    )

    def with_local(self, name: str) -> Names:
        return replace(self, locals=self.locals | {name})


@dataclass
class Typed:
    """Compiled source of one expression, and its type if known (``any`` if not)."""

    source: str
    type: str = "any"


#: Names that are namespaces: ``NAMESPACE.NAME``.
NAMESPACES = ("heap", "server", "match", "session")
#: Names that are values on their own.
VALUES = ("input", "result", "remote_ip", "remote_port")
_CONSTANTS = {"true": "True", "false": "False", "null": "None",
              "True": "True", "False": "False", "None": "None"}  # fmt: skip
_CONSTANT_TYPES = {"True": "bool", "False": "bool", "None": "null"}
_NUMBERS = frozenset({"int", "float", "bool"})

_BINOPS: dict[type, str] = {
    ast.Add: "+", ast.Sub: "-", ast.Div: "/", ast.FloorDiv: "//", ast.Mult: "*", ast.Mod: "%",
}  # fmt: skip
_COMPARE: dict[type, str] = {
    ast.Eq: "==", ast.NotEq: "!=", ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">=",
    ast.In: "in", ast.NotIn: "not in",
}  # fmt: skip
_REFUSED: dict[type, str] = {
    ast.Lambda: "lambdas are", ast.ListComp: "comprehensions are",
    ast.SetComp: "comprehensions are", ast.DictComp: "comprehensions are",
    ast.GeneratorExp: "comprehensions are", ast.NamedExpr: "assignments (:=) are",
    ast.Await: "await is", ast.Yield: "yield is", ast.YieldFrom: "yield is",
    ast.JoinedStr: "f-strings are (a template is one already)", ast.Starred: "*arguments are",
    ast.Set: "sets are (use a list)", ast.Tuple: "tuples are (use a list)",
}  # fmt: skip


def _parse(text: str) -> tuple[ast.expr, list[int]]:
    """The parse tree of ``text``, and where each of its lines starts."""
    if not text.strip():
        raise ExprError("empty expression", 0)
    starts = [0]
    for m in re.finditer("\n", text):
        starts.append(m.end())
    try:
        # Parenthesised: leading spaces and line breaks inside are fine.
        tree = ast.parse("(" + text + "\n)", mode="eval")
    except SyntaxError as exc:
        line = (exc.lineno or 1) - 1
        col = (exc.offset or 1) - 1 - (1 if line == 0 else 0)
        # Past the last line: the parenthesis the text was wrapped in, its end.
        offset = len(text) if line >= len(starts) else starts[line] + max(col, 0)
        message = (exc.msg or "invalid syntax").removesuffix(" (<unknown>, line 1)")
        if "'(' was never closed" in message:
            message = "unbalanced parentheses"
        raise ExprError(f"syntax error: {message}", min(offset, len(text))) from None
    return tree.body, starts


class _Compiler:
    def __init__(self, text: str, names: Names, bind: Bind, starts: list[int]):
        self.text = text
        self.names = names
        self.bind = bind
        self.starts = starts

    def at(self, node: ast.AST) -> int:
        line = getattr(node, "lineno", 1) - 1
        col = getattr(node, "col_offset", 1) - (1 if line == 0 else 0)
        return self.starts[min(line, len(self.starts) - 1)] + max(col, 0)

    def fail(self, message: str, node: ast.AST) -> ExprError:
        return ExprError(message, self.at(node))

    def expr(self, node: ast.AST) -> Typed:
        method = getattr(self, "_" + type(node).__name__, None)
        if method is None:
            what = _REFUSED.get(type(node))
            if what is None:
                what = f"{type(node).__name__} is"
                if isinstance(node, ast.BinOp | ast.UnaryOp):
                    what = f"the operator {_op_text(node.op)} is"
            subject, _, aside = what.partition(" (")
            aside = f" ({aside}" if aside else ""
            raise self.fail(f"{subject} not part of the expression language{aside}", node)
        result: Typed = method(node)
        return result

    # -- leaves ---------------------------------------------------------------------------

    def _Constant(self, node: ast.Constant) -> Typed:
        value = node.value
        if value is None or value is True or value is False:
            return Typed(repr(value), _CONSTANT_TYPES[repr(value)])
        if isinstance(value, str):
            return Typed(self.bind(value), "text")
        if isinstance(value, bool | int | float) and not isinstance(value, complex):
            return Typed(self.bind(value), "float" if isinstance(value, float) else "int")
        raise self.fail(f"{type(value).__name__} literals are not part of the language "
                        "(text, numbers, true, false, null are)", node)  # fmt: skip

    def _Name(self, node: ast.Name) -> Typed:
        name, names = node.id, self.names
        if name in _CONSTANTS:
            constant = _CONSTANTS[name]
            return Typed(constant, _CONSTANT_TYPES[constant])
        if name in names.locals:
            return Typed(f"m[{self.bind(name)}]")
        if name == "input":
            if not names.has_input:
                raise self.fail(
                    "input is only available in input and named-event handlers "
                    "(not in connected, enter, exit or timeout actions)",
                    node,
                )
            return Typed("i", "text" if names.text_input else "any")
        if name == "result":
            if not names.has_result:
                raise self.fail("result is only available after a call, work or run action "
                                "in the same list", node)  # fmt: skip
            return Typed(f"m.get({self.bind(RESULT)})")
        if name == "remote_ip":
            return Typed("s.remote_ip", "text")
        if name == "remote_port":
            return Typed("s.remote_port", "int")
        if name in NAMESPACES:
            raise self.fail(f"{name} is a namespace: write {name}.NAME", node)
        if name in FUNCTIONS or name in names.extra or name == "matches":
            raise self.fail(f"{name} is a function: write {name}(...)", node)
        known = [*VALUES, *names.locals, "true", "false", "null"]
        near = hint(name, [*known, *(f"{n}.{name}" for n in ("heap", "server"))])
        raise self.fail(
            f"unknown name {name!r}{near}: expected {', '.join(known)}, or heap.NAME, "
            f"server.NAME, match.NAME, session.id, session.state (text is quoted: '{name}')",
            node,
        )

    def _Attribute(self, node: ast.Attribute) -> Typed:
        base, key = node.value, node.attr
        if isinstance(base, ast.Name) and base.id not in NAMESPACES and base.id not in VALUES:
            near = hint(base.id, NAMESPACES)
            raise self.fail(
                f"unknown name {base.id!r}{near}: the dotted names are heap.NAME, "
                "server.NAME, match.NAME, session.id and session.state",
                node,
            )
        if not isinstance(base, ast.Name) or base.id not in NAMESPACES:
            raise self.fail(
                f".{key}: only heap.NAME, server.NAME, match.NAME and session.id/state are "
                "dotted; a value has no attributes (use a function: len(x), lower(x))",
                node,
            )
        if key.startswith("_"):
            raise self.fail(f"{base.id}.{key}: names do not start with _", node)
        ns = base.id
        if ns == "heap":
            return Typed(f"s.heap.get({self.bind(key)})")
        if ns == "server":
            return Typed(f"s.server.heap.get({self.bind(key)})")
        if ns == "session":
            if key == "id":
                return Typed("s.id", "int")
            if key == "state":
                return Typed("s.protocol_state" if self.names.states else "s.state", "text")
            raise self.fail(f"session.{key}: a session has id and state", node)
        groups = self.names.groups
        if groups is None:
            raise self.fail(f"match.{key} is only available in a rule with a match, prefix or "
                            "message condition", node)  # fmt: skip
        if key not in groups:
            known = ", ".join(sorted(groups)) or "none"
            raise self.fail(f"match.{key}: the rule's condition has no group {key!r}"
                            f"{hint(key, groups)} (its groups: {known})", node)  # fmt: skip
        return Typed(f"m[{self.bind(key)}]", "text" if self.names.text_input else "any")

    # -- operators ------------------------------------------------------------------------

    def _BinOp(self, node: ast.BinOp) -> Typed:
        op = _BINOPS.get(type(node.op))
        if op is None:
            raise self.fail(f"the operator {_op_text(node.op)} is not part of the expression "
                            "language", node)  # fmt: skip
        left, right = self.expr(node.left), self.expr(node.right)
        lt, rt = left.type, right.type
        known = lt != "any" and rt != "any"
        if op == "+":
            if known and not (
                (lt in _NUMBERS and rt in _NUMBERS) or lt == rt == "text" or lt == rt == "list"
            ):
                raise self.fail(f"cannot add {lt} and {rt} (to join text: str(x) + ...)", node)
            kind = lt if lt == rt else "float" if {lt, rt} <= _NUMBERS else "any"
            if {lt, rt} & {"int", "float"} and "any" in (lt, rt):
                kind = "float"  # a number, if anything: text or a list plus a number raises
            return Typed(f"({left.source} + {right.source})", kind)
        for side in (lt, rt):
            if side != "any" and side not in _NUMBERS:
                raise self.fail(f"{op} needs numbers, not {side}", node)
        kind = "float" if op == "/" else (lt if lt == rt and lt != "bool" else "any")
        if op == "*":
            return Typed(f"{self.bind(multiply)}({left.source}, {right.source})", kind)
        if op == "%":
            return Typed(f"{self.bind(remainder)}({left.source}, {right.source})", kind)
        # - / // with a side not known: Python's own TypeError at run time (text, lists).
        return Typed(f"({left.source} {op} {right.source})", kind)

    def _UnaryOp(self, node: ast.UnaryOp) -> Typed:
        operand = self.expr(node.operand)
        if isinstance(node.op, ast.Not):
            return Typed(f"(not {operand.source})", "bool")
        if isinstance(node.op, ast.USub | ast.UAdd):
            if operand.type != "any" and operand.type not in _NUMBERS:
                raise self.fail(f"{_op_text(node.op)} needs a number, not {operand.type}", node)
            sign = "-" if isinstance(node.op, ast.USub) else "+"
            return Typed(f"({sign}{operand.source})", operand.type)
        raise self.fail(f"the operator {_op_text(node.op)} is not part of the expression "
                        "language", node)  # fmt: skip

    def _BoolOp(self, node: ast.BoolOp) -> Typed:
        word = " and " if isinstance(node.op, ast.And) else " or "
        parts = [self.expr(v) for v in node.values]
        kinds = {p.type for p in parts}
        return Typed("(" + word.join(p.source for p in parts) + ")",
                     kinds.pop() if len(kinds) == 1 else "any")  # fmt: skip

    def _Compare(self, node: ast.Compare) -> Typed:
        parts = [self.expr(node.left)]
        source = parts[0].source
        for op, comparator in zip(node.ops, node.comparators, strict=True):
            word = _COMPARE.get(type(op))
            if word is None:
                raise self.fail(f"{_op_text(op)} is not part of the expression language "
                                "(== and != compare values)", node)  # fmt: skip
            right = self.expr(comparator)
            left = parts[-1]
            if word in ("in", "not in"):
                if right.type not in ("any", "text", "list", "map"):
                    raise self.fail(f"{word} needs text, a list or a map on its right, not "
                                    f"{right.type}", comparator)  # fmt: skip
                if right.type == "text" and left.type not in ("any", "text"):
                    raise self.fail(f"{word} text needs text on its left, not {left.type}", node)
            elif (
                word not in ("==", "!=")
                and "any" not in (left.type, right.type)
                and not ({left.type, right.type} <= _NUMBERS or left.type == right.type)
            ):
                raise self.fail(f"cannot compare {left.type} {word} {right.type}", node)
            source += f" {word} {right.source}"
            parts.append(right)
        return Typed(f"({source})", "bool")

    def _IfExp(self, node: ast.IfExp) -> Typed:
        test, body, other = self.expr(node.test), self.expr(node.body), self.expr(node.orelse)
        kind = body.type if body.type == other.type else "any"
        return Typed(f"({body.source} if {test.source} else {other.source})", kind)

    def _Subscript(self, node: ast.Subscript) -> Typed:
        value = self.expr(node.value)
        if value.type not in ("any", "text", "list", "map"):
            raise self.fail(f"cannot index {value.type}", node)
        index = node.slice
        if isinstance(index, ast.Slice):
            if value.type == "map":
                raise self.fail("a map cannot be sliced", index)
            parts = []
            for part in (index.lower, index.upper, index.step):
                if part is None:
                    parts.append("")
                    continue
                typed = self.expr(part)
                if typed.type not in ("any", "int", "null"):
                    raise self.fail(f"a slice takes integers, not {typed.type}", part)
                parts.append(typed.source)
            return Typed(f"{value.source}[{':'.join(parts)}]", value.type)
        key = self.expr(index)
        if value.type in ("text", "list") and key.type not in ("any", "int"):
            raise self.fail(f"{value.type} is indexed by an integer, not {key.type}", index)
        return Typed(f"{value.source}[{key.source}]", "text" if value.type == "text" else "any")

    def _List(self, node: ast.List) -> Typed:
        return Typed("[" + "".join(self.expr(e).source + ", " for e in node.elts) + "]", "list")

    def _Dict(self, node: ast.Dict) -> Typed:
        items = []
        for key, value in zip(node.keys, node.values, strict=True):
            if key is None:
                raise self.fail("** in a map literal is not part of the language", value)
            items.append(f"{self.expr(key).source}: {self.expr(value).source}, ")
        return Typed("{" + "".join(items) + "}", "map")

    def _Call(self, node: ast.Call) -> Typed:
        func = node.func
        if not isinstance(func, ast.Name):
            raise self.fail("only the expression language's functions can be called "
                            "(no methods: lower(x), not x.lower())", node)  # fmt: skip
        name = func.id
        if node.keywords:
            raise self.fail(f"{name}(): arguments are positional", node.keywords[0])
        if name == "matches":
            return self._matches(node)
        extra = self.names.extra.get(name)
        if extra is not None:
            function, signature = extra
        elif name in FUNCTIONS:
            function, signature = FUNCTIONS[name], SIGNATURES[name]
        else:
            near = hint(name, [*FUNCTIONS, *self.names.extra, "matches"])
            raise self.fail(f"unknown function {name!r}{near} (docs/expressions.md lists them)",
                            func)  # fmt: skip
        kinds, optional, result = signature
        repeats = bool(kinds) and kinds[-1].endswith("*")
        most = len(kinds) if not repeats else None
        least = len(kinds) - optional
        count = len(node.args)
        if count < least or (most is not None and count > most):
            want = (f"{least}" if least == most else f"{least} to {most}" if most is not None
                    else f"at least {least}")  # fmt: skip
            raise self.fail(f"{name}() takes {want} argument{'s' if want != '1' else ''}, "
                            f"not {count}", node)  # fmt: skip
        args = []
        for k, arg in enumerate(node.args):
            typed = self.expr(arg)
            allowed = kinds[min(k, len(kinds) - 1)].rstrip("*").split("|")
            if (
                "any" not in allowed
                and typed.type not in ("any", *allowed)
                and not (typed.type in _NUMBERS and {"int", "float"} & set(allowed))
            ):
                raise self.fail(f"{name}() takes {' or '.join(allowed)} here, not "
                                    f"{typed.type}", arg)  # fmt: skip
            args.append(typed.source)
        fast = _INLINE.get(name) if len(args) == 1 and SIMPLE.fullmatch(args[0]) else None
        if fast is not None and function is FUNCTIONS[name]:
            # The common case without a call (an argument cheap to read twice):
            # int("42") of ASCII digits, str() of text, len() of text, list, map.
            x, call = args[0], f"{self.bind(function)}({args[0]})"
            test = fast.format(x=x, str=self.bind(str), types=self.bind((str, list, dict)))
            builtin = self.bind({"int": int, "len": len, "str": None}[name])
            value = x if name == "str" else f"{builtin}({x})"
            return Typed(f"({value} if {test} else {call})", result)
        return Typed(f"{self.bind(function)}({', '.join(args)})", result)

    def _matches(self, node: ast.Call) -> Typed:
        if len(node.args) != 2:
            raise self.fail(f"matches() takes 2 arguments, not {len(node.args)}", node)
        subject, pattern = node.args
        if not (isinstance(pattern, ast.Constant) and isinstance(pattern.value, str)):
            raise self.fail(
                "matches(): the pattern must be written out (a quoted regular expression), "
                "so that it is checked when the spec loads",
                pattern,
            )
        # Linear time on RE2, or checked for catastrophic backtracking: see .regexes.
        from .regexes import PatternError, compile_pattern

        try:
            search = compile_pattern(pattern.value).search
        except PatternError as exc:
            raise self.fail(f"matches(): {exc.message}", pattern) from None
        typed = self.expr(subject)
        if typed.type not in ("any", "text"):
            raise self.fail(f"matches() takes text, not {typed.type}", subject)

        def matches(value: Any) -> bool:
            if value.__class__ is not str:
                raise TypeError(f"matches() takes text, not {type(value).__name__}")
            return search(value) is not None

        return Typed(f"{self.bind(matches)}({typed.source})", "bool")


#: Generated source cheap and safe to evaluate more than once: a name, a heap or
#: match lookup, an index (_Call's inlined functions, templates' text fast path).
SIMPLE = re.compile(r"[\w.]+(?:\(\w+\))?(?:\[[\w.]+\])*")
# Functions inlined for simple arguments: the test under which the builtin gives
# what the function would (otherwise the function is called, with its checks).
_INLINE: dict[str, str] = {
    "int": "({x}.__class__ is {str} and {x}.isascii() and {x}.isdigit())",
    "str": "{x}.__class__ is {str}",
    "len": "{x}.__class__ in {types}",
}


def _op_text(op: ast.AST) -> str:
    return {
        ast.Pow: "**", ast.LShift: "<<", ast.RShift: ">>", ast.BitOr: "|", ast.BitAnd: "&",
        ast.BitXor: "^", ast.MatMult: "@", ast.Invert: "~", ast.Is: "is", ast.IsNot: "is not",
        ast.USub: "-", ast.UAdd: "+", ast.Not: "not",
    }.get(type(op), type(op).__name__)  # fmt: skip


def compile_expression(text: str, names: Names, bind: Bind) -> Typed:
    """Compile ``text`` into Python source of ``s`` (the session), ``i`` (the
    record) and ``m`` (the match dict), every literal bound with ``bind``.

    Raises:
        ExprError: what is wrong, and where in ``text``.
    """
    tree, starts = _parse(text)
    return _Compiler(text, names, bind, starts).expr(tree)


@dataclass
class Location:
    """Where ``set``, ``unset`` and ``append`` write: a heap, a key, and indexes."""

    #: ``s.heap`` or ``s.server.heap``.
    heap: str
    #: The heap key.
    key: str
    #: Source of each index after the key, in order (``items[match.key]``).
    indexes: list[str]
    #: ``NAME`` or ``server.NAME``: the name bounds are declared by.
    name: str


def compile_location(text: str, names: Names, bind: Bind) -> Location:
    """``NAME``, ``heap.NAME``, ``server.NAME``, each with ``[EXPR]`` indexes after it."""
    tree, starts = _parse(text)
    compiler = _Compiler(text, names, bind, starts)
    indexes: list[str] = []
    node = tree
    while isinstance(node, ast.Subscript):
        if isinstance(node.slice, ast.Slice):
            raise compiler.fail("a slice cannot be written to", node.slice)
        indexes.append(compiler.expr(node.slice).source)
        node = node.value
    indexes.reverse()
    if isinstance(node, ast.Name) and node.id not in NAMESPACES and not node.id.startswith("_"):
        return Location("s.heap", node.id, indexes, node.id)
    if (
        isinstance(node, ast.Attribute)
        and isinstance(node.value, ast.Name)
        and node.value.id in ("heap", "server")
        and not node.attr.startswith("_")
    ):
        if node.value.id == "heap":
            return Location("s.heap", node.attr, indexes, node.attr)
        return Location("s.server.heap", node.attr, indexes, f"server.{node.attr}")
    raise compiler.fail(
        "expected NAME (the session's heap) or server.NAME (the server-wide heap), "
        "optionally with [KEY] indexes",
        node,
    )


def _field_end(text: str, start: int) -> int:
    """Where the field opened just before ``start`` closes (its ``}``), skipping
    brackets and quoted text; -1 if it never does."""
    depth, j, quote, n = 0, start, "", len(text)
    while j < n:
        d = text[j]
        if quote:
            if d == "\\":
                j += 1
            elif d == quote:
                quote = ""
        elif d in "'\"":
            quote = d
        elif d in "([{":
            depth += 1
        elif d in ")]}":
            if depth == 0 and d == "}":
                return j
            depth -= 1
        j += 1
    return -1


def regex_fields(text: str) -> list[tuple[str, str | None, int]]:
    """A ``match`` pattern's parts, as :func:`split_template` gives them: only a
    ``{`` followed by a letter or ``_`` opens a field, so quantifiers such as
    ``{1,250}`` stay the regular expression's own."""
    parts: list[tuple[str, str | None, int]] = []
    literal: list[str] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c == "\\" and i + 1 < n:
            literal.append(text[i : i + 2])
            i += 2
            continue
        if c == "{" and i + 1 < n and (text[i + 1].isalpha() or text[i + 1] == "_"):
            end = _field_end(text, i + 1)
            if end < 0:
                raise ExprError("a { that is never closed", i)
            parts.append(("".join(literal), text[i + 1 : end], i + 1))
            literal = []
            i = end + 1
            continue
        literal.append(c)
        i += 1
    if literal or not parts:
        parts.append(("".join(literal), None, n))
    return parts


def split_template(text: str) -> list[tuple[str, str | None, int]]:
    """A template's parts: (literal text, field or None, offset of the field's text).

    ``{`` opens a field and the matching ``}`` closes it; brackets, braces and
    quoted text inside a field are skipped over, so a field may hold any
    expression (``{x[1:2]}``, ``{a != b}``, ``{ {"k": 1} }``). ``{{`` and ``}}``
    are literal braces.

    Raises:
        ExprError: a ``{`` that is never closed, or a lone ``}``.
    """
    parts: list[tuple[str, str | None, int]] = []
    literal: list[str] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c == "{" and text.startswith("{{", i):
            literal.append("{")
            i += 2
            continue
        if c == "}":
            if text.startswith("}}", i):
                literal.append("}")
                i += 2
                continue
            raise ExprError("a lone } in a template (write }} for a brace)", i)
        if c != "{":
            literal.append(c)
            i += 1
            continue
        start = i + 1
        j = _field_end(text, start)
        if j < 0:
            raise ExprError("a { that is never closed (write {{ for a brace)", i)
        parts.append(("".join(literal), text[start:j], start))
        literal = []
        i = j + 1
    if literal or not parts:
        parts.append(("".join(literal), None, n))
    return parts
