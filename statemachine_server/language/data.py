"""The heaps' data: bounded maps and lists, and how ``set``, ``unset`` and ``append`` store.

A spec keeps its data in two heaps, each session's (``heap.NAME``) and the
server-wide one (``server.NAME``). Values keep their types: text, numbers,
booleans, null, and maps and lists of them. Every map and list a spec stores is
bounded, by the ``collections`` entry declared for its name or by its heap's
default (:data:`SESSION_DEFAULT`, :data:`SERVER_DEFAULT`), in items and in bytes:
past a bound the write raises :class:`~statemachine_server.errors.LimitReached`,
the connection's ``error`` event, or, where the spec asks (``evict: lru``, as
memcached's ``-m``), the least recently used entries make room. Text stored in
a heap is bounded by the same ``max_bytes``, so a value grown a line at a time
(``set: {body: heap.body + input}``) cannot grow without end either.

Sizes are counted as stored: text by its length, a number, boolean or null as 8
bytes, a key as its own size, a nested map or list by its own count when it is
stored. Python code (``call``) that writes into these containers directly is
not counted: it is trusted code.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from ..errors import LimitReached

__all__ = [
    "SERVER_DEFAULT", "SESSION_DEFAULT", "Bound", "Items", "LRUTable", "Table", "append", "keep",
    "size_of", "store", "unset",
]  # fmt: skip


class Bound:
    """A collection's bound: items, bytes, and what happens past them."""

    __slots__ = ("_nested", "lru", "max_bytes", "max_items", "name")

    def __init__(self, name: str, max_items: int, max_bytes: int, lru: bool = False):
        self.name = name
        self.max_items = max_items
        self.max_bytes = max_bytes
        self.lru = lru
        self._nested: Bound | None = None

    def nested(self) -> Bound:
        """The bound of a map or list stored inside this one: the same, no eviction."""
        if self._nested is None:
            self._nested = Bound(f"{self.name}[...]", self.max_items, self.max_bytes)
        return self._nested

    def __repr__(self) -> str:
        lru = ", lru" if self.lru else ""
        return f"Bound({self.name}: {self.max_items} items, {self.max_bytes} bytes{lru})"


#: Each session's maps and lists, unless declared: 10,000 items, 1 MiB.
SESSION_DEFAULT = Bound("heap", 10_000, 1 << 20)
#: The server-wide heap's, unless declared: 100,000 items, 64 MiB.
SERVER_DEFAULT = Bound("server", 100_000, 64 << 20)

_SCALAR = 8
_SCALARS = frozenset({int, float, bool, type(None)})
_MISSING: Any = object()
_new_list = list.__new__
_od_getitem = OrderedDict.__getitem__
_od_setitem = OrderedDict.__setitem__
_od_pop = OrderedDict.pop
_od_move_to_end = OrderedDict.move_to_end


def size_of(value: Any) -> int:
    """A value's size as the bounds count it."""
    cls = value.__class__
    if cls is str:
        return len(value)  # type: ignore[no-any-return]
    if cls in _SCALARS:
        return _SCALAR
    if cls is Table or cls is LRUTable or cls is Items:
        return value.used + _SCALAR  # type: ignore[no-any-return]
    if isinstance(value, dict):
        return sum(size_of(k) + size_of(v) for k, v in value.items()) + _SCALAR
    if isinstance(value, list):
        return sum(size_of(v) for v in value) + _SCALAR
    return _SCALAR


class Table(OrderedDict[Any, Any]):
    """A bounded map; in insertion order, which is recency order under ``lru``."""

    __slots__ = ("bound", "used")

    def __init__(self, bound: Bound):
        super().__init__()
        self.bound = bound
        self.used = 0

    def put(self, key: Any, value: Any) -> None:
        """Store ``key``, within the bound (evicting under ``lru``)."""
        size = size_of(key) + size_of(value)
        old = OrderedDict.pop(self, key, _MISSING)
        if old is not _MISSING:
            self.used -= size_of(key) + size_of(old)
        bound = self.bound
        if len(self) >= bound.max_items or self.used + size > bound.max_bytes:
            self._make_room(size)
        OrderedDict.__setitem__(self, key, value)
        self.used += size

    def store(self, key: Any, value: Any) -> None:
        """``put(key, keep(value, ...))`` in one call, for ``set`` on a map entry
        (a hot path: memcached's ``set``): text, numbers and flat lists inline."""
        cls = value.__class__
        bound = self.bound
        if cls is str:
            size = len(value)
        elif cls in _SCALARS:
            size = _SCALAR
        elif cls is list and len(value) <= bound.max_items:
            size = 0
            for v in value:
                c = v.__class__
                if c is str:
                    size += len(v)
                elif c in _SCALARS:
                    size += _SCALAR
                else:
                    size = -1
                    break
            if size < 0 or size > bound.max_bytes:
                value = keep(value, bound.nested())
                size = size_of(value)
            else:
                items = _new_list(Items)
                items.bound = bound.nested()
                list.extend(items, value)
                items.used = size
                value = items
                size += _SCALAR
        else:
            value = keep(value, bound.nested())
            size = size_of(value)
        ksize = len(key) if key.__class__ is str else size_of(key)
        size += ksize
        old = _od_pop(self, key, _MISSING)
        if old is not _MISSING:
            c = old.__class__
            self.used -= ksize + (
                len(old) if c is str else old.used + _SCALAR if c is Items else size_of(old)
            )
        if len(self) >= bound.max_items or self.used + size > bound.max_bytes:
            self._make_room(size)
        _od_setitem(self, key, value)
        self.used += size

    def _make_room(self, size: int) -> None:
        bound = self.bound
        if size > bound.max_bytes:
            raise LimitReached(f"{bound.name}: an entry of {size} bytes is over max_bytes "
                               f"({bound.max_bytes})")  # fmt: skip
        while len(self) >= bound.max_items or self.used + size > bound.max_bytes:
            if not bound.lru or not self:
                self.used = max(self.used, 0)
                what = "items" if len(self) >= bound.max_items else "bytes"
                limit = bound.max_items if what == "items" else bound.max_bytes
                raise LimitReached(f"{bound.name}: over max_{what} ({limit})")
            old_key, old = self.popitem(last=False)  # the least recently used
            self.used -= size_of(old_key) + size_of(old)

    def drop(self, key: Any) -> None:
        if key in self:
            self.used -= size_of(key) + size_of(OrderedDict.__getitem__(self, key))
            OrderedDict.__delitem__(self, key)


class LRUTable(Table):
    """A bounded map whose reads count as use: the least recently used is evicted."""

    __slots__ = ()

    def __getitem__(self, key: Any) -> Any:
        value = _od_getitem(self, key)
        _od_move_to_end(self, key)  # read: the most recently used now
        return value

    def get(self, key: Any, default: Any = None) -> Any:
        if key in self:
            return self[key]
        return default


class Items(list[Any]):
    """A bounded list."""

    __slots__ = ("bound", "used")

    def __init__(self, bound: Bound):
        # No list.__init__: an empty list is one already (a call fewer per list).
        self.bound = bound
        self.used = 0

    def add(self, value: Any) -> None:
        bound = self.bound
        size = size_of(value)
        if len(self) >= bound.max_items:
            if not bound.lru:
                raise LimitReached(f"{bound.name}: over max_items ({bound.max_items})")
            self.drop(0)
        while self.used + size > bound.max_bytes:
            if not bound.lru or not self:
                raise LimitReached(f"{bound.name}: over max_bytes ({bound.max_bytes})")
            self.drop(0)  # the oldest
        list.append(self, value)
        self.used += size

    def put(self, index: Any, value: Any) -> None:
        if index.__class__ is not int:
            raise TypeError(f"{self.bound.name}: a list is indexed by an integer")
        old = self[index]
        size = size_of(value)
        if self.used - size_of(old) + size > self.bound.max_bytes:
            raise LimitReached(f"{self.bound.name}: over max_bytes ({self.bound.max_bytes})")
        self.used += size - size_of(old)
        list.__setitem__(self, index, value)

    def drop(self, index: Any) -> None:
        if index.__class__ is int and -len(self) <= index < len(self):
            self.used -= size_of(self[index])
            list.__delitem__(self, index)


def keep(value: Any, bound: Bound) -> Any:
    """``value`` as a heap stores it: new maps and lists copied into bounded ones,
    text checked against ``max_bytes``. A map or list that is a heap's already
    is stored as it is: a second name for it (``set: {item: server.items[k]}``),
    within the bound it has."""
    cls = value.__class__
    if cls is str:
        if len(value) > bound.max_bytes:
            raise LimitReached(f"{bound.name}: text of {len(value)} bytes is over max_bytes "
                               f"({bound.max_bytes})")  # fmt: skip
        return value
    if cls in _SCALARS or cls is Table or cls is LRUTable or cls is Items:
        return value
    if isinstance(value, dict):
        table = LRUTable(bound) if bound.lru else Table(bound)
        inner = bound.nested()
        for k, v in value.items():
            table.put(k, keep(v, inner))
        return table
    if isinstance(value, list):
        if len(value) > bound.max_items:
            raise LimitReached(f"{bound.name}: over max_items ({bound.max_items})")
        items = _new_list(Items)  # no __init__ call: the fields are set here
        items.bound = bound
        inner = bound.nested()
        # One pass, no add() per item: a small list (an item's fields) is common.
        list.extend(items, [v if v.__class__ is str or v.__class__ in _SCALARS
                            else keep(v, inner) for v in value])  # fmt: skip
        used = 0
        for v in items:
            cls = v.__class__
            used += len(v) if cls is str else _SCALAR if cls in _SCALARS else size_of(v)
        if used > bound.max_bytes:
            raise LimitReached(f"{bound.name}: over max_bytes ({bound.max_bytes})")
        items.used = used
        return items
    return value


def _container(heap: dict[str, Any], key: str, indexes: list[Any], bound: Bound) -> Any:
    """The container ``heap[key][indexes...]`` names (a new map where the heap's
    own value is unset)."""
    container: Any = heap.get(key)
    if container is None:
        container = heap[key] = LRUTable(bound) if bound.lru else Table(bound)
    for index in indexes:
        container = container[index]
    return container


def store(heap: dict[str, Any], key: str, indexes: list[Any], value: Any, bound: Bound) -> None:
    """``set``: ``heap[key][indexes...] = value``, within bounds."""
    if not indexes:
        heap[key] = keep(value, bound)
        return
    *path, last = indexes
    container = _container(heap, key, path, bound)
    if isinstance(container, Table | Items):
        container.put(last, keep(value, container.bound.nested()))
    elif container is None:
        raise TypeError(f"{bound.name}: cannot set an item of null")
    else:
        raise TypeError(f"{bound.name}: cannot set an item of {type(container).__name__}")


def unset(heap: dict[str, Any], key: str, indexes: list[Any]) -> None:
    """``unset``: remove ``heap[key][indexes...]``; nothing if it is not there."""
    if not indexes:
        heap.pop(key, None)
        return
    *path, last = indexes
    if heap.get(key) is None:
        return
    try:
        container = _container(heap, key, path, SESSION_DEFAULT)
    except (KeyError, IndexError, TypeError):
        return
    if isinstance(container, Table | Items):
        container.drop(last)
    elif isinstance(container, dict):
        container.pop(last, None)
    elif (
        isinstance(container, list)
        and last.__class__ is int
        and -len(container) <= last < len(container)
    ):
        del container[last]


def append(heap: dict[str, Any], key: str, indexes: list[Any], value: Any, bound: Bound) -> None:
    """``append``: add ``value`` at the end of the list ``heap[key][indexes...]``
    (a new list where the heap's own value is unset)."""
    if not indexes and heap.get(key) is None:
        heap[key] = Items(bound)
    container = heap[key] if not indexes else _container(heap, key, indexes, bound)
    if container is None:
        raise TypeError(f"{bound.name}: cannot append to null")
    if isinstance(container, Items):
        container.add(keep(value, container.bound.nested()))
    elif isinstance(container, list):
        items = Items(bound)
        for v in container:
            items.add(v)
        items.add(keep(value, bound.nested()))
        if not indexes:
            heap[key] = items
        else:
            raise TypeError(f"{bound.name}: cannot append to an unbounded list")
    else:
        raise TypeError(f"{bound.name}: append needs a list, not {type(container).__name__}")
