"""What loading (and so ``check``) costs for specs of many states, beside reading their YAML.

``python -m benchmarks.micro.load [--states N]`` generates specs of ``N`` states
(10,000 by default) in four shapes and loads each in this process:

- ``enters``: each state's enter actions goto the next (a chain);
- ``timeouts``: a ring of states, each left by its timeout's goto;
- ``input``: every state answers input with a template and goes to the next;
- ``rules``: every state has an ``equals`` rule and a regex rule (fewer states:
  the spec would pass the 1 MiB bound).

The baseline, timed beside each, is PyYAML's fastest reading of the same text
(``yaml.load`` with libyaml's ``CSafeLoader``): data without positions, checks
or code. Prints one JSON object per shape: best-of-3 seconds for both and
``ratio`` = load / yaml. The bar (issue: 10,000 states checked in under a
second) is ``load_s`` plus the command's start-up (about 0.15 s here).
"""

from __future__ import annotations

import argparse
import gc
import json
import time
from collections.abc import Callable

import yaml

from statemachine_server.language import load_spec_text

HEAD = ["version: 1", "server:", "  name: big", "  port: 12345"]


def enters(n: int) -> str:
    lines = [*HEAD, "initial: t0", "states:"]
    lines += [f"  t{i}: {{enter: [goto: t{i + 1}]}}" for i in range(n - 1)]
    lines += [f"  t{n - 1}: {{handlers: {{input: [close]}}}}"]
    return "\n".join(lines) + "\n"


def ring(n: int, body: Callable[[int, str], list[str]]) -> str:
    """States s0 ... s(n-1), each written by ``body(i, next state)``."""
    lines = [*HEAD, "initial: s0", "states:"]
    for i in range(n):
        lines += [f"  s{i}:", *("    " + line for line in body(i, f"s{(i + 1) % n}"))]
    return "\n".join(lines) + "\n"


def timeouts(n: int) -> str:
    return ring(n, lambda i, nxt: [f"timeout: {{after: 5, do: [goto: {nxt}]}}"])


def inputs(n: int) -> str:
    return ring(n, lambda i, nxt: [
        "handlers:", "  input:", f"    - reply: 'at {i}: {{input}}'", f"    - goto: {nxt}",
    ])  # fmt: skip


def rules(n: int) -> str:
    return ring(n, lambda i, nxt: [
        "handlers:", "  input:",
        f"    - equals: 'go{i}'", f"      do: [reply: ok, goto: {nxt}]",
        "    - match: '^x(?P<a>\\d+)$'", "      do: [reply: '{match.a}']",
    ])  # fmt: skip


SHAPES: dict[str, tuple[Callable[[int], str], float]] = {
    # name: (generator, share of --states it gets under the 1 MiB bound)
    "enters": (enters, 1.0),
    "timeouts": (timeouts, 1.0),
    "input": (inputs, 1.0),
    "rules": (rules, 0.6),
}


def best(fn: Callable[[], object], runs: int = 3) -> float:
    out = float("inf")
    for _ in range(runs):
        gc.collect()
        start = time.perf_counter()
        fn()
        out = min(out, time.perf_counter() - start)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--states", type=int, default=10_000)
    args = parser.parse_args()
    for name, (make, share) in SHAPES.items():
        n = int(args.states * share)
        text = make(n)
        load = best(lambda: load_spec_text(text, f"{name}.yaml"))  # noqa: B023
        plain = best(lambda: yaml.load(text, Loader=yaml.CSafeLoader))  # noqa: B023
        print(
            json.dumps(
                {
                    "shape": name,
                    "states": n,
                    "bytes": len(text),
                    "load_s": round(load, 3),
                    "yaml_s": round(plain, 3),
                    "ratio": round(load / plain, 2),
                }
            )
        )


if __name__ == "__main__":
    main()
