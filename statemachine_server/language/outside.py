"""The actions that run what is outside the spec: Python (``call``, ``work``) and
programs (``run``).

A part of :class:`~.actions.ActionCompiler` (a base class of it, as the
connection's parts are of the connection), kept apart because these actions
are the spec's way out to code: each imports or starts something, and is where
a spec stops being data. What they share with the other actions (the report,
the runtime, the Python targets) is declared here and set by the compiler.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..work import in_process, in_thread
from .model import Call, Run, Work
from .pycall import Calls, call_in_worker
from .report import Report, SpecPath
from .runtime import Op, Runtime, failure, reply_error, reply_result, then_with
from .templates import RESULT, Template

__all__ = ["OutsideActions"]


#: Where actions live: a state's name, or None for the top-level handlers (actions.Scope).
_Scope = str | None


class OutsideActions:
    """``call``, ``work`` and ``run``, compiled (see :mod:`.actions`)."""

    report: Report
    rt: Runtime
    calls: Calls
    structured: bool
    ways_out: set[_Scope]

    def _work(
        self, a: Work, where: SpecPath, then: list[Op], nested: Callable[..., list[Op]]
    ) -> Op | None:
        try:
            fn = self.calls.function(a.function)
        except ValueError as exc:
            self.report(str(exc).replace("call ", "work ", 1), (*where, "function"))
            return None
        progress = nested(a.progress, "progress")
        failed = nested(a.on_error, "on_error") or [reply_error]
        target, pool, base = a.function, a.in_, self.calls.base_dir
        options = {"timeout": a.timeout, "progress_every": a.progress_every}

        done, progressed, fail = (
            then_with(self.rt, then),
            then_with(self.rt, progress),
            then_with(self.rt, failed),
        )

        def start(s: Any, i: Any, m: dict[str, Any]) -> None:
            job: Any
            if pool == "steps":
                job = fn(s, i, m)
                if not hasattr(job, "send"):
                    raise TypeError(
                        f"work {target!r} returned {type(job).__name__}: expected a generator "
                        "(a function with `yield`), or `in: thread` / `in: process`"
                    )
            elif pool == "thread":
                job = in_thread(fn, i, dict(m))
            else:  # a process: the function is found again there, by name
                job = in_process(call_in_worker, base, target, i, dict(m))
            s.work(
                job,
                lambda s, r: done(s, i, m, r),
                on_progress=(lambda s, v: progressed(s, i, m, v)) if progress else None,
                on_error=lambda s, exc: fail(s, i, m, failure(exc)),
                **options,
            )

        return start

    def _run(
        self,
        a: Run,
        where: SpecPath,
        tpl: Callable[..., Template],
        then: list[Op],
        nested: Callable[..., list[Op]],
    ) -> Op | None:
        program = a.argv[0]
        if "{" in program or "}" in program:
            self.report("run: the program must be written out, not a template "
                        "(its arguments may be templates)", (*where, "argv", 0))  # fmt: skip
            return None
        args = [tpl(text, "argv", k) for k, text in enumerate(a.argv[1:], 1)]
        stdin = tpl(a.stdin, "stdin") if a.stdin is not None else None
        stdout = nested(a.stdout, "stdout") or [reply_result]
        stderr = nested(a.stderr, "stderr")
        failed = nested(a.on_error, "on_error") or [reply_error]
        timeout = a.timeout
        rt = self.rt
        done, out, err, fail = (then_with(rt, then), then_with(rt, stdout),
                                then_with(rt, stderr), then_with(rt, failed))  # fmt: skip

        def start(s: Any, i: Any, m: dict[str, Any]) -> None:
            argv = [program, *(render(s, i, m) for render in args)]
            data = None if stdin is None else stdin(s, i, m)

            def job() -> Any:
                child = s.run_process(
                    argv,
                    stdin=data,
                    on_stdout=lambda s, line: out(s, i, m, line),
                    on_stderr=(lambda s, line: err(s, i, m, line)) if stderr else None,
                )
                try:
                    return (yield child)
                finally:
                    child.kill()  # a timeout or a cancel; nothing once it has exited

            s.work(
                job(),
                lambda s, status: done(s, i, m, status),
                on_error=lambda s, exc: fail(s, i, m, failure(exc)),
                timeout=timeout,
            )

        return start

    def _call(self, a: Call, where: SpecPath, scope: _Scope) -> Op | None:
        self.ways_out.add(scope)  # Python may close or goto: not followed by the checks
        try:
            fn = self.calls.function(a.function)
        except ValueError as exc:
            self.report(str(exc), (*where, "function"))
            return None
        target = a.function

        if a.reply and self.structured:

            def call_structured(s: Any, i: Any, m: dict[str, Any]) -> None:
                result = fn(s, i, m)
                m[RESULT] = "" if result is None else result
                if result is not None:
                    s.put(result)  # any value the filter can encode, as one record

            return call_structured

        if not a.reply:

            def call_quietly(s: Any, i: Any, m: dict[str, Any]) -> None:
                result = fn(s, i, m)
                m[RESULT] = "" if result is None else result

            return call_quietly

        def call(s: Any, i: Any, m: dict[str, Any]) -> None:
            result = fn(s, i, m)
            if result is None:
                m[RESULT] = ""
                return
            m[RESULT] = result
            if isinstance(result, str):
                s.put(result)
            elif isinstance(result, list | tuple) and all(isinstance(r, str) for r in result):
                s.put(*result)
            else:
                raise TypeError(
                    f"call {target!r} returned {type(result).__name__}: expected a string, "
                    "a list of strings, or None (or set `reply: false`)"
                )

        return call
