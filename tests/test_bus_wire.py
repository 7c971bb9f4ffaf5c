"""The bus's sans-I/O parts: its messages as bytes, names, addresses, member counts."""

from __future__ import annotations

import subprocess
import sys

import msgspec
import pytest
from conftest import ROOT, TIMEOUT

from statemachine_server.bus import wire
from statemachine_server.bus.sizes import ASKED_FOR, MARK, MAX_ASKED, Sizes, field
from statemachine_server.bus.wire import Event, Names, Post, Text, WireError, decode, encode


@pytest.mark.parametrize(
    "message",
    [
        Text("0123456789abcdef", "lobby", "<alice> hi"),
        Text("0123456789abcdef", "", ""),
        Event("0123456789abcdef", "room 1", "note", {"n": [1, 2.5, True, None, "x"]}),
        Post("0123456789abcdef", 17, "note", "hello"),
        Post("0123456789abcdef", "front-desk", "note", ["any", 3]),
    ],
)
def test_each_message_comes_back_as_it_went(message: wire.Message) -> None:
    assert decode(encode(message)) == message


def test_a_broadcast_costs_little_more_than_its_text() -> None:
    data = encode(Text("0123456789abcdef", "lobby", "hello"))
    assert len(data) == 31 and data.endswith(b"\xa5lobby\xa5hello")


@pytest.mark.parametrize(
    "data",
    [b"", b"\x00", b"PING", msgspec.msgpack.encode([9, "n", "g", "t"]),
     msgspec.msgpack.encode([1, "n", "g"]), msgspec.msgpack.encode({"node": "n"})],
)  # fmt: skip
def test_bytes_that_are_not_a_message_are_one_error(data: bytes) -> None:
    with pytest.raises(WireError):
        decode(data)


@pytest.mark.parametrize("data", [object(), 2**80, 1j])
def test_an_input_msgpack_cannot_carry_is_a_type_error(data: object) -> None:
    with pytest.raises(TypeError):
        encode(Event("0123456789abcdef", "g", "e", data))


def test_addresses_name_a_node_and_a_session() -> None:
    node = wire.new_node()
    assert len(node) == 16 and int(node, 16) >= 0
    assert node != wire.new_node()
    assert wire.parse_address(wire.address(node, 42)) == (node, 42)
    for text in ["42", "front-desk", f"{node}/", f"{node}/x", f"{node[:-1]}/1", f"{node}/1/2"]:
        assert wire.parse_address(text) is None, text


def test_names_are_the_servers_own() -> None:
    chat, other = Names("chat"), Names("other")
    assert chat.group("lobby") == b"statemachine-server:chat:group:lobby"
    assert chat.group("lobby") != other.group("lobby")
    assert chat.node("ab") == b"statemachine-server:chat:node:ab"
    assert chat.all == b"statemachine-server:chat:all"
    assert chat.sizes("ab") == "statemachine-server:chat:sizes:ab"
    assert chat.nodes == "statemachine-server:chat:nodes"


def test_sizes_writes_what_changed_and_reads_what_is_wanted() -> None:
    sizes = Sizes(ttl=5.0)
    sizes.changed("lobby", 1)
    sizes.changed("den", 1)
    sizes.changed("den", 0)
    assert sizes.writes() == (False, {field("lobby"): 1}, [field("den")])
    assert sizes.writes() == (False, {}, [])  # nothing changed since
    assert sizes.wanted(0.0) == ["lobby"]
    # Two other nodes: 2 and 3 members of the lobby, 4 of a group asked about.
    assert sizes.size("attic", 0.0) == 0  # not read yet
    assert sizes.curious
    groups = sizes.wanted(0.0)
    assert groups == ["lobby", "attic"] and not sizes.curious
    sizes.update(groups, [[b"2", None], [b"3", b"4"]], now=1.0)
    assert sizes.size("lobby", 1.0) == 1 + 5
    assert sizes.size("attic", 1.0) == 4
    # Unread for longer than the TTL: the others are forgotten, ours stay.
    assert sizes.size("lobby", 6.5) == 1


def test_sizes_rewrite_the_whole_hash_once_it_may_be_lost() -> None:
    sizes = Sizes()
    sizes.changed("lobby", 2)
    sizes.changed("den", 1)
    sizes.writes()
    sizes.changed("den", 0)
    sizes.lost()  # Redis restarted, or a write failed
    assert sizes.writes() == (True, {field("lobby"): 2}, [])
    assert sizes.writes() == (False, {}, [])


def test_groups_asked_about_are_read_for_a_while_and_bounded() -> None:
    sizes = Sizes()
    sizes.asked("old", 0.0)
    sizes.asked("new", ASKED_FOR)
    assert sizes.wanted(ASKED_FOR + 1) == ["new"]
    for i in range(MAX_ASKED + 10):
        sizes.asked(f"g{i}", ASKED_FOR)
    wanted = sizes.wanted(ASKED_FOR)
    assert len(wanted) == MAX_ASKED and wanted[-1] == f"g{MAX_ASKED + 9}"
    assert MARK not in map(field, wanted)


def test_a_server_without_a_bus_does_not_import_redis() -> None:
    code = (
        "import sys\n"
        "from statemachine_server import Kernel\n"
        "from statemachine_server.language import build_server, load_spec\n"
        "build_server(load_spec('specs/chat.yaml', server={'port': 0}), Kernel()).close()\n"
        "assert 'redis' not in sys.modules, 'redis imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=TIMEOUT)
