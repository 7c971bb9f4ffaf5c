"""What one process tells the others through Redis, as bytes: sans-I/O.

Three messages, each a MessagePack array whose first item says which (msgspec's
tagged, array-like Structs: a broadcast of ``hello`` to ``lobby`` is 31 bytes):

- :class:`Text`: a broadcast's text, for every member of a group;
- :class:`Event`: a named event and its input, posted to every member of a group;
- :class:`Post`: a named event for one session, by its id on a node or its alias.

Every message names the node that published it. A node is subscribed to the
channels of the groups it has members in, so its own broadcasts come back to it;
it skips them, having delivered them to its members already.

Names
-----
One process is one **node**, named at random when its bus starts (64 bits: two
nodes of one server colliding is a 1 in 10^19 event). Everything in Redis is
under one prefix per server name (two specs sharing a Redis do not see each
other's groups): the channel of a group, the channel of a node (posts by id),
one channel for every node (posts by alias), and the member counts
(:mod:`.sizes`).

A session's **address** is ``NODE/ID``: its id in its own process's kernel is
unique there only, and two servers started apart number their sessions alike.
"""

from __future__ import annotations

import re
import secrets
from typing import Any

import msgspec

__all__ = [
    "Event", "Message", "Names", "Post", "Text", "WireError", "address", "decode", "encode",
    "new_node", "parse_address",
]  # fmt: skip


class Text(msgspec.Struct, array_like=True, frozen=True, tag=1):
    """``broadcast: {text: ...}``: the text, for each member of ``group``."""

    node: str
    group: str
    text: str


class Event(msgspec.Struct, array_like=True, frozen=True, tag=2):
    """``broadcast: {event: ...}``: ``event`` with ``data`` as its input, posted to
    each member of ``group``."""

    node: str
    group: str
    event: str
    data: Any


class Post(msgspec.Struct, array_like=True, frozen=True, tag=3):
    """``event`` for one session: ``target`` is its id (on the node whose channel
    this came on) or an alias (on the channel of every node)."""

    node: str
    target: int | str
    event: str
    data: Any


Message = Text | Event | Post

_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder(Message).decode  # type: ignore[arg-type]


class WireError(ValueError):
    """Bytes on a bus channel that are not one of its messages."""


def encode(message: Message) -> bytes:
    """``message`` as bytes.

    Raises:
        TypeError: an event's input holds something MessagePack cannot carry (it
            carries text, numbers, booleans, null, lists and maps).
    """
    try:
        return _encode(message)
    except (msgspec.EncodeError, OverflowError) as exc:  # an int past 64 bits...
        raise TypeError(str(exc)) from None


def decode(data: bytes) -> Message:
    """The message in ``data``.

    Raises:
        WireError: not a bus message (another program on the channel, a newer version).
    """
    try:
        return _decode(data)  # type: ignore[no-any-return]
    except msgspec.DecodeError as exc:
        raise WireError(str(exc)) from None


def new_node() -> str:
    """A new node name: 16 hex digits."""
    return secrets.token_hex(8)


_ADDRESS = re.compile(r"([0-9a-f]{16})/([0-9]{1,18})")


def address(node: str, session_id: int) -> str:
    """The address of session ``session_id`` of ``node``: ``NODE/ID``."""
    return f"{node}/{session_id}"


def parse_address(text: str) -> tuple[str, int] | None:
    """(node, session id) from an address; None if ``text`` is not one."""
    found = _ADDRESS.fullmatch(text)
    return None if found is None else (found[1], int(found[2]))


class Names:
    """The channels and keys of one server's bus, under ``statemachine-server:NAME:``."""

    def __init__(self, server: str):
        self.prefix = f"statemachine-server:{server}:"
        #: The channel every node listens on (posts by alias).
        self.all = f"{self.prefix}all".encode()
        #: The set of nodes whose member counts are read (see :mod:`.sizes`).
        self.nodes = f"{self.prefix}nodes"

    def group(self, group: str) -> bytes:
        """The channel of ``group``."""
        return f"{self.prefix}group:{group}".encode()

    def node(self, node: str) -> bytes:
        """The channel of ``node`` (posts to its sessions by id)."""
        return f"{self.prefix}node:{node}".encode()

    def sizes(self, node: str) -> str:
        """The hash of ``node``'s member counts, one field per group."""
        return f"{self.prefix}sizes:{node}"
