"""One view of several processes' metrics: their texts, summed sample by sample.

Worker processes each count their own connections, events and bytes; what an
operator asks is how many there are in all. So a sample (a name and its labels)
found in several workers' texts is their sum, except where a sum would lie:
``start_time_seconds`` is the earliest, ``serving`` the least (one worker
draining is a server draining), ``info`` 1. The text read is the one
:func:`~.metrics.exposition` writes (``# HELP``, ``# TYPE``, one sample a line,
no timestamps), so this is not a general parser of the format.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from .metrics import PREFIX

__all__ = ["merge"]

#: How samples of the same name and labels combine (default: their sum).
_COMBINE: dict[str, Callable[[float, float], float]] = {
    PREFIX + "start_time_seconds": min,
    PREFIX + "serving": min,
    PREFIX + "info": max,
}


def _split(line: str) -> tuple[str, str, float]:
    # "name{labels} value" or "name value": label values may hold spaces and
    # braces (escaped quotes only), so the value is what follows the last space.
    head, _, value = line.rpartition(" ")
    name, brace, labels = head.partition("{")
    return name, brace + labels, float(value)


def merge(texts: Iterable[str]) -> str:
    """The samples of ``texts`` combined, each family where it first appears."""
    comments: dict[str, list[str]] = {}  # family -> its HELP and TYPE lines
    samples: dict[str, dict[str, float]] = {}  # family -> labels -> value
    for text in texts:
        for line in text.splitlines():
            if line.startswith("# "):  # "# HELP name ..." or "# TYPE name kind"
                name = line.split(" ", 3)[2]
                known = comments.setdefault(name, [])
                if line not in known and len(known) < 2:
                    known.append(line)
                samples.setdefault(name, {})
            elif line:
                name, labels, value = _split(line)
                family = samples.setdefault(name, {})
                old = family.get(labels)
                family[labels] = value if old is None else _COMBINE.get(name, _add)(old, value)
    lines: list[str] = []
    for name, family in samples.items():
        lines += comments.get(name, [])
        lines += [f"{name}{labels} {_number(value)}" for labels, value in family.items()]
    return "\n".join(lines) + "\n"


def _add(a: float, b: float) -> float:
    return a + b


def _number(value: float) -> str:
    return str(int(value)) if value.is_integer() else repr(value)
