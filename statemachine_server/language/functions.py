"""The functions an expression may call, and how a value is written as text.

The expression language (:mod:`.expressions`) calls nothing else: these are bound
into generated code by name, so a spec can reach no other Python. Each takes
plain values (text, numbers, booleans, null, lists, maps) and returns one, runs
in time linear in what it is given (no loops a spec controls), and builds
nothing larger than a small multiple of its arguments, whose own sizes the
heap's bounds and the filters' record limits keep in check.

A function given a value of the wrong type raises :class:`TypeError` with a
message that names it; at run time that is the connection's ``error`` event.
Types the compiler can see (a literal, ``len(...)``, ``input`` under a text
filter) are checked when the spec is loaded instead (:data:`SIGNATURES`).
"""

from __future__ import annotations

import base64
import binascii
import math
import time
from collections.abc import Callable
from typing import Any

import msgspec

__all__ = [
    "FUNCTIONS", "MAX_INT", "MAX_TEXT", "SIGNATURES", "as_int", "kind", "multiply", "remainder",
    "text",
]  # fmt: skip

#: The largest integer ``*`` may produce (CEL's int is 64-bit too): a product can
#: double its size per message, and a spec must not grow a number without bound.
MAX_INT = (1 << 63) - 1

#: The longest text ``replace`` and ``join`` may build: 16 Mi characters (each
#: other function's result is at most about the size of its arguments).
MAX_TEXT = 16 << 20

_encode_json = msgspec.json.Encoder().encode


def kind(value: Any) -> str:
    """A value's type as the expression reference names it."""
    if value is None:
        return "null"
    return _KINDS.get(type(value)) or (
        "map" if isinstance(value, dict) else "list" if isinstance(value, list) else "text"
        if isinstance(value, str) else type(value).__name__
    )  # fmt: skip


_KINDS = {str: "text", int: "int", float: "float", bool: "bool", list: "list", dict: "map"}


def text(value: Any) -> str:
    """How a value is written into a template: text as it is, null as nothing,
    booleans as ``true``/``false``, numbers as Python writes them, lists and maps
    as JSON."""
    if value.__class__ is str:
        return value  # type: ignore[no-any-return]
    if value is None:
        return ""
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int | float | str):
        return str(value)
    try:
        return _encode_json(value).decode("utf-8", "surrogateescape")
    except (TypeError, UnicodeEncodeError, msgspec.EncodeError):
        return str(value)


def _want(name: str, value: Any, *kinds: type) -> None:
    if not isinstance(value, kinds) or (value.__class__ is bool and bool not in kinds):
        want = " or ".join(_KINDS.get(k, k.__name__) for k in kinds)
        raise TypeError(f"{name}() takes {want}, not {kind(value)}")


def _number(name: str, value: Any) -> None:
    if value.__class__ is bool or not isinstance(value, int | float):
        raise TypeError(f"{name} needs numbers, not {kind(value)}")


def multiply(a: Any, b: Any) -> Any:
    """``a * b``: numbers only (no repeated text or lists: a size the client picks),
    an integer result within 64 bits."""
    _number("*", a)
    _number("*", b)
    product = a * b
    if product.__class__ is int and not -MAX_INT - 1 <= product <= MAX_INT:
        raise OverflowError("integer overflow in *: the result needs more than 64 bits")
    return product


def remainder(a: Any, b: Any) -> Any:
    """``a % b``: numbers only (Python's ``%`` would format text)."""
    _number("%", a)
    _number("%", b)
    return a % b


_MISSING: Any = object()


def as_int(value: Any, default: Any = _MISSING) -> Any:
    """``int(x)``: text of ASCII digits with an optional sign (never ``"٣"`` or
    ``"²"``, which Python's own ``int`` reads), a number (truncated) or a boolean;
    ``int(x, d)`` gives ``d`` instead of an error."""
    try:
        if value.__class__ is str:
            digits = value[1:] if value[:1] in ("-", "+") else value
            if not (digits.isascii() and digits.isdigit()):
                raise ValueError(f"int(): {value[:40]!r} is not an integer")
            return int(value)
        if isinstance(value, int | float):
            return int(value)
        raise TypeError(f"int() takes text or a number, not {kind(value)}")
    except (ValueError, TypeError, OverflowError):
        if default is _MISSING:
            raise
        return default


def _float(value: Any, default: Any = _MISSING) -> Any:
    try:
        if value.__class__ is str:
            result = float(value)
            if not value.strip().isascii() or math.isnan(result):
                raise ValueError(f"float(): {value[:40]!r} is not a number")
            return result
        if isinstance(value, int | float):
            return float(value)
        raise TypeError(f"float() takes text or a number, not {kind(value)}")
    except (ValueError, TypeError, OverflowError):
        if default is _MISSING:
            raise
        return default


def _len(value: Any) -> int:
    cls = value.__class__
    if cls is not str and not isinstance(value, list | dict):
        _want("len", value, str, list, dict)
    return len(value)


def byte_len(value: Any) -> int:
    """The length of text once sent: its bytes (any byte survives as text)."""
    if value.__class__ is not str:
        _want("byte_len", value, str)
    return len(value.encode("utf-8", "surrogateescape"))


def _lower(value: Any) -> str:
    _want("lower", value, str)
    return value.lower()  # type: ignore[no-any-return]


def _upper(value: Any) -> str:
    _want("upper", value, str)
    return value.upper()  # type: ignore[no-any-return]


def _trim(value: Any) -> str:
    _want("trim", value, str)
    return value.strip()  # type: ignore[no-any-return]


def _startswith(value: Any, prefix: Any) -> bool:
    _want("startswith", value, str)
    _want("startswith", prefix, str)
    return value.startswith(prefix)  # type: ignore[no-any-return]


def _endswith(value: Any, suffix: Any) -> bool:
    _want("endswith", value, str)
    _want("endswith", suffix, str)
    return value.endswith(suffix)  # type: ignore[no-any-return]


def _find(value: Any, part: Any) -> int:
    _want("find", value, str)
    _want("find", part, str)
    return value.find(part)  # type: ignore[no-any-return]


def _split(value: Any, sep: Any = None, limit: Any = -1) -> list[str]:
    if value.__class__ is not str or (sep is not None and sep.__class__ is not str):
        _want("split", value, str)
        _want("split", sep, str)
    if sep == "":
        raise ValueError("split(): the separator is empty")
    if limit.__class__ is not int:
        _want("split", limit, int)
    return value.split(sep, limit)  # type: ignore[no-any-return]


def _join(items: Any, sep: Any = "") -> str:
    _want("join", items, list)
    _want("join", sep, str)
    parts = list(map(text, items))
    if sep and len(parts) > 1:
        size = sum(map(len, parts)) + (len(parts) - 1) * len(sep)
        if size > MAX_TEXT:  # many items, each with a long separator
            raise ValueError(f"join(): the result would be {size} characters (at most {MAX_TEXT})")
    return sep.join(parts)  # type: ignore[no-any-return]


def _replace(value: Any, old: Any, new: Any) -> str:
    _want("replace", value, str)
    _want("replace", old, str)
    _want("replace", new, str)
    if not old:
        raise ValueError("replace(): the text to replace is empty")
    if len(new) > len(old):
        # The one function whose result can outgrow its arguments many times
        # over (each match replaced by a long text): refused past MAX_TEXT.
        size = len(value) + value.count(old) * (len(new) - len(old))
        if size > MAX_TEXT:
            raise ValueError(f"replace(): the result would be {size} characters "
                             f"(at most {MAX_TEXT})")  # fmt: skip
    return value.replace(old, new)  # type: ignore[no-any-return]


def _keys(value: Any) -> list[Any]:
    _want("keys", value, dict)
    return list(value)


def _values(value: Any) -> list[Any]:
    _want("values", value, dict)
    return list(value.values())


def _get(container: Any, key: Any, default: Any = None) -> Any:
    if isinstance(container, dict):
        try:
            return container.get(key, default)
        except TypeError:  # an unhashable key: not there
            return default
    if isinstance(container, list):
        _want("get", key, int)
        return container[key] if -len(container) <= key < len(container) else default
    if container is None:
        return default
    raise TypeError(f"get() takes a map or a list, not {kind(container)}")


def _default(value: Any, fallback: Any) -> Any:
    return fallback if value is None else value


def _min(*values: Any) -> Any:
    return min(values[0] if len(values) == 1 else values)


def _max(*values: Any) -> Any:
    return max(values[0] if len(values) == 1 else values)


def _abs(value: Any) -> Any:
    _number("abs()", value)
    return abs(value)


def _sum(values: Any) -> Any:
    _want("sum", values, list)
    for value in values:
        _number("sum()", value)
    return sum(values)


def _sorted(values: Any) -> list[Any]:
    _want("sorted", values, list)
    return sorted(values)


def _is_digits(value: Any) -> bool:
    _want("is_digits", value, str)
    return value.isascii() and value.isdigit()  # type: ignore[no-any-return]


def _b64decode(value: Any, default: Any = _MISSING) -> Any:
    _want("b64decode", value, str)
    try:
        raw = base64.b64decode(value.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        if default is not _MISSING:
            return default
        raise ValueError("b64decode(): not base64") from None
    return raw.decode("utf-8", "surrogateescape")


def _b64encode(value: Any) -> str:
    _want("b64encode", value, str)
    return base64.b64encode(value.encode("utf-8", "surrogateescape")).decode("ascii")


def _json(value: Any) -> str:
    try:
        return _encode_json(value).decode("utf-8", "surrogateescape")
    except (TypeError, msgspec.EncodeError) as exc:
        raise TypeError(f"json(): {exc}") from None


def _bool(value: Any) -> bool:
    return bool(value)


def _type(value: Any) -> str:
    return kind(value)


def _now() -> float:
    return time.time()


#: Every function an expression may call, by name.
FUNCTIONS: dict[str, Callable[..., Any]] = {
    "len": _len,
    "byte_len": byte_len,
    "int": as_int,
    "float": _float,
    "str": text,
    "bool": _bool,
    "type": _type,
    "lower": _lower,
    "upper": _upper,
    "trim": _trim,
    "startswith": _startswith,
    "endswith": _endswith,
    "find": _find,
    "split": _split,
    "join": _join,
    "replace": _replace,
    "keys": _keys,
    "values": _values,
    "get": _get,
    "default": _default,
    "min": _min,
    "max": _max,
    "abs": _abs,
    "sum": _sum,
    "sorted": _sorted,
    "is_digits": _is_digits,
    "b64decode": _b64decode,
    "b64encode": _b64encode,
    "json": _json,
    "now": _now,
}

#: Each function's arguments (their types, ``any`` for any; ``*`` after the last:
#: it repeats), how many may be left out, and its result's type: what the
#: compiler checks when the spec is loaded. ``matches`` (its pattern must be
#: written out) and the runtime's functions are the compiler's own.
SIGNATURES: dict[str, tuple[tuple[str, ...], int, str]] = {
    "len": (("text|list|map",), 0, "int"),
    "byte_len": (("text",), 0, "int"),
    "int": (("any", "any"), 1, "int"),
    "float": (("any", "any"), 1, "float"),
    "str": (("any",), 0, "text"),
    "bool": (("any",), 0, "bool"),
    "type": (("any",), 0, "text"),
    "lower": (("text",), 0, "text"),
    "upper": (("text",), 0, "text"),
    "trim": (("text",), 0, "text"),
    "startswith": (("text", "text"), 0, "bool"),
    "endswith": (("text", "text"), 0, "bool"),
    "find": (("text", "text"), 0, "int"),
    "split": (("text", "text|null", "int"), 2, "list"),
    "join": (("list", "text"), 1, "text"),
    "replace": (("text", "text", "text"), 0, "text"),
    "keys": (("map",), 0, "list"),
    "values": (("map",), 0, "list"),
    "get": (("map|list|null", "any", "any"), 1, "any"),
    "default": (("any", "any"), 0, "any"),
    "min": (("any*",), 0, "any"),
    "max": (("any*",), 0, "any"),
    "abs": (("int|float",), 0, "any"),
    "sum": (("list",), 0, "any"),
    "sorted": (("list",), 0, "list"),
    "is_digits": (("text",), 0, "bool"),
    "b64decode": (("text", "any"), 1, "any"),
    "b64encode": (("text",), 0, "text"),
    "json": (("any",), 0, "text"),
    "now": ((), 0, "float"),
}
