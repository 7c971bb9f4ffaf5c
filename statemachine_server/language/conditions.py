"""A rule's condition, compiled: its test of the input (``match``, ``equals``,
``prefix``, ``message``) and its guard (``if``).

A part of the compiler (:mod:`.compile`, a base class of it), kept apart because
it is one concern: each condition becomes a function ``test(session, input)``
giving the match dict (``match.NAME``) or None, and, where it can, a snippet
that a generated handler runs inline (:mod:`.inline`). What it shares with the
rest of the compiler is declared here.
"""

from __future__ import annotations

import re
from typing import Any

from .actions import ActionCompiler
from .expressions import ExprError, Names, compile_expression, regex_fields
from .generated import Sources
from .inline import Snippet
from .messages import Messages
from .model import Rule
from .regexes import PatternError, compile_pattern
from .regexes import cached as cached_pattern
from .report import Report, SpecPath, at, dotted, inside
from .runtime import Condition, always
from .templates import TemplateCode, compile_guard, compile_template

__all__ = ["Conditions", "never"]


def never(session: Any, data: Any) -> None:
    """The condition of a rule whose condition is reported: its actions are
    still compiled (for their own errors), and nothing will run them."""
    return None


class Conditions:
    """Rules' conditions, compiled (see the module's docstring)."""

    report: Report
    acts: ActionCompiler
    sources: Sources
    has_states: bool
    records_structured: bool
    messages: Messages | None

    def _condition(
        self, rule: Rule, path: SpecPath, event: str, has_input: bool
    ) -> tuple[Condition | None, frozenset[str] | None]:
        test, groups = self._test(rule, path, event, has_input)
        if rule.if_ is None or test is None:
            return test, groups
        text = rule.if_ if isinstance(rule.if_, str) else str(rule.if_).lower()  # YAML true
        # The guard: after the test, whose groups it may name.
        names = self._names(has_input, None if test is always else groups)
        inline = self.acts.inline
        p = inline.prefix()
        values: dict[str, Any] = {}
        try:
            source = compile_expression(text, names, TemplateCode(values, p).name).source
            guard = compile_guard(text, names, self.sources, dotted((*path, "if")))
        except ExprError as exc:
            self.report(str(exc), inside((*path, "if"), exc))
            return None, groups
        guarded = [f"if m is not None and not ({source}):", "    m = None"]
        if test is always:

            def guard_alone(s: Any, data: Any) -> dict[str, Any] | None:
                return {} if guard(s, data, None) else None

            inline.tests[guard_alone] = Snippet(["m = {}", *guarded], values)
            return guard_alone, None

        def test_and_guard(s: Any, data: Any) -> dict[str, Any] | None:
            match = test(s, data)  # type: ignore[misc]  # not None: see above
            if match is None or not guard(s, data, match):
                return None
            return match

        base = inline.tests.get(test)
        if base is not None:
            values.update(base.values)
            inline.tests[test_and_guard] = Snippet([*base.lines, *guarded], values)
        return test_and_guard, groups

    def _names(self, has_input: bool, groups: frozenset[str] | None) -> Names:
        return Names(
            has_input=has_input, groups=groups, states=self.has_states,
            text_input=not self.records_structured, extra=self.acts.extra,
        )  # fmt: skip

    def _test(
        self, rule: Rule, path: SpecPath, event: str, has_input: bool
    ) -> tuple[Condition | None, frozenset[str] | None]:
        given = [
            k for k in ("match", "equals", "prefix", "message") if getattr(rule, k) is not None
        ]
        if len(given) > 1:
            self.report(
                f"a rule has at most one test of the input (and an `if` beside it); this one "
                f"has {' and '.join(given)}",
                path,
            )
            return None, None
        if not given:
            if rule.ignore_case:
                self.report("ignore_case needs a condition (match, equals or prefix)",
                            (*path, "ignore_case"))  # fmt: skip
            return always, None
        (kind,) = given
        if not has_input:
            self.report(
                f"`{event}` has no input to test: conditions work in input and "
                "named-event handlers (an `if` works anywhere)",
                (*path, kind),
            )
            return None, None
        value: str = getattr(rule, kind)
        fold = rule.ignore_case
        if kind == "message" or (self.records_structured and event == "input"):
            return self._message_condition(rule, kind, path, event)
        if kind == "match":
            return self._match(value, fold, (*path, "match"), has_input)
        if "{" in value:
            return self._templated(kind, value, fold, (*path, kind), has_input)
        inline = self.acts.inline
        p = inline.prefix()
        if kind == "equals":
            if fold:
                want = value.casefold()
                return (lambda s, data: {} if data.casefold() == want else None), frozenset()

            def test_equals(s: Any, data: Any) -> dict[str, Any] | None:
                return {} if data == value else None

            inline.tests[test_equals] = Snippet([f"m = {{}} if i == {p}e else None"],
                                                {f"{p}e": value})  # fmt: skip
            return test_equals, frozenset()
        n = len(value)
        if fold:
            want = value.casefold()
            return (
                lambda s, data: {"rest": data[n:]} if data[:n].casefold() == want else None
            ), frozenset({"rest"})

        def test_prefix(s: Any, data: Any) -> dict[str, Any] | None:
            return {"rest": data[n:]} if data.startswith(value) else None

        inline.tests[test_prefix] = Snippet(
            [f"m = {{'rest': i[{p}n:]}} if i.startswith({p}p) else None"],
            {f"{p}n": n, f"{p}p": value},
        )
        return test_prefix, frozenset({"rest"})

    def _templated(
        self, kind: str, value: str, fold: bool, where: SpecPath, has_input: bool
    ) -> tuple[Condition | None, frozenset[str] | None]:
        """``equals`` or ``prefix`` with ``{...}`` fields: rendered per record."""
        try:
            render = compile_template(value, names=self._names(has_input, None),
                                      sources=self.sources, where=dotted(where))  # fmt: skip
        except ExprError as exc:
            self.report(str(exc), inside(where, exc))
            return None, None
        if kind == "equals":
            if fold:
                return (lambda s, data: {} if data.casefold() == render(s, data).casefold()
                        else None), frozenset()  # fmt: skip
            return (lambda s, data: {} if data == render(s, data) else None), frozenset()

        def test_prefix(s: Any, data: Any) -> dict[str, Any] | None:
            want = render(s, data)
            head = data[: len(want)]
            if (head.casefold() == want.casefold()) if fold else head == want:
                return {"rest": data[len(want) :]}
            return None

        return test_prefix, frozenset({"rest"})

    def _match(
        self, value: str, fold: bool, where: SpecPath, has_input: bool
    ) -> tuple[Condition | None, frozenset[str] | None]:
        # On RE2 (linear time) or, where only Python's re can run it, on re after a
        # check for shapes that backtrack catastrophically: see .regexes.
        try:
            parts = regex_fields(value)
        except ExprError as exc:
            self.report(str(exc), inside(where, exc))
            return None, None
        if len(parts) == 1 and parts[0][1] is None:
            try:
                compiled = compile_pattern(value, fold)
            except PatternError as exc:
                self._bad_pattern(exc, where)
                return None, None
            search = compiled.search

            def test_match(s: Any, data: Any) -> dict[str, Any] | None:
                return search(data)

            p = self.acts.inline.prefix()
            self.acts.inline.tests[test_match] = Snippet([f"m = {p}s(i)"], {f"{p}s": search})
            return test_match, compiled.groups
        # Fields: each value is matched literally (escaped), the pattern compiled
        # per record (the recent ones are kept).
        names = self._names(has_input, None)
        renders: list[Any] = []
        for literal, field, offset in parts:  # offset: of the field's text
            renders.append(literal)
            if field is None:
                continue
            try:
                fn = compile_template("{" + field + "}", names=names, sources=self.sources,
                                      where=dotted(where))  # fmt: skip
            except ExprError as exc:
                self.report(str(exc), (*where, at(offset - 1 + exc.offset)))  # "{" + field
                return None, None
            renders.append(fn)
        probe = "".join(p if isinstance(p, str) else "x" for p in renders)
        try:
            groups = compile_pattern(probe, fold).groups
        except PatternError as exc:
            self._bad_pattern(exc, where, offsets=False)
            return None, None

        def test_fields(s: Any, data: Any) -> dict[str, Any] | None:
            pattern = "".join(p if isinstance(p, str) else re.escape(p(s, data)) for p in renders)
            return cached_pattern(pattern, fold).search(data)

        return test_fields, groups

    def _bad_pattern(self, exc: PatternError, where: SpecPath, offsets: bool = True) -> None:
        pos = f" at position {exc.offset}" if exc.offset is not None and offsets else ""
        self.report(f"{exc.message}{pos}", where)

    def _message_condition(
        self, rule: Rule, kind: str, path: SpecPath, event: str
    ) -> tuple[Condition | None, frozenset[str] | None]:
        where = (*path, kind)
        if kind != "message":
            self.report(f"{kind} tests text, and this server's records are messages "
                        "(json, msgpack): use `message: KIND`", where)  # fmt: skip
            return None, None
        if event != "input":
            self.report("`message` tests input records, in the `input` handler", where)
            return None, None
        if self.messages is None:
            self.report("`message` needs a schema with tagged messages (server.filter.schema)",
                        where)  # fmt: skip
            return None, None
        if rule.ignore_case:
            self.report("ignore_case is for text conditions", (*path, "ignore_case"))
        assert rule.message is not None
        found = self.messages.get(rule.message)
        if found is None:
            near = self.acts.hint(rule.message, self.messages)
            known = ", ".join(self.messages)
            self.report(f"unknown message {rule.message!r}{near} (the schema has {known})", where)
            return None, None
        struct, fields = found

        def test_message(s: Any, data: Any) -> dict[str, Any] | None:
            if type(data) is not struct:
                return None
            return {name: getattr(data, name) for name in fields}

        return test_message, frozenset(fields)
