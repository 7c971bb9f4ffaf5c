"""Prometheus metrics: counts that match a known workload, read by prometheus-client's parser."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import pytest
from conftest import TIMEOUT, connect, run_cli
from prometheus_client.parser import text_string_to_metric_families

from statemachine_server.language import load_spec_text
from statemachine_server.net.connection import Connection
from statemachine_server.net.metered import MeteredConnection
from statemachine_server.observe import endpoint as endpoint_module
from statemachine_server.observe.metrics import Family, exposition

# Clients log in (greeting -> member), then talk; "bye" leaves for the last state.
SPEC = """\
version: 1
server:
  name: lobby
  metrics: "127.0.0.1:0"
initial: greeting
states:
  greeting:
    handlers:
      input:
        - equals: login
          do: [reply: welcome, goto: member]
        - do: [reply: "login first"]
  member:
    handlers:
      input:
        - equals: bye
          do: [reply: bye, goto: leaving]
        - do: [reply: "{input}"]
  leaving:               # enter actions: the goto here takes the full path
    enter: [set: {left: "true"}]
    handlers:
      input: [close]
"""

Sample = tuple[str, dict[str, str], float]


async def http(port: int, request: bytes) -> tuple[int, dict[str, str], bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    async with asyncio.timeout(TIMEOUT):
        data = await reader.read()
    writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), headers, body


async def scrape(port: int) -> list[Sample]:
    status, headers, body = await http(port, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status == 200
    assert headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    assert int(headers["Content-Length"]) == len(body)
    return [
        (sample.name, dict(sample.labels), sample.value)
        for family in text_string_to_metric_families(body.decode())
        for sample in family.samples
    ]


def value(samples: list[Sample], name: str, **labels: str) -> float:
    found = [v for n, lab, v in samples if n == "statemachine_server_" + name and lab == labels]
    assert len(found) == 1, (name, labels, [s for s in samples if name in s[0]])
    return found[0]


async def talk(server: Any, lines: list[bytes], replies: int) -> Any:
    reader, writer = await connect(server)
    writer.write(b"".join(line + b"\n" for line in lines))
    async with asyncio.timeout(TIMEOUT):
        for _ in range(replies):
            await reader.readline()
    return reader, writer


async def test_the_counts_match_a_known_workload(serve_spec: Any) -> None:
    server = await serve_spec(SPEC)
    assert server.connection_class is MeteredConnection
    port = server.metrics.port
    # 3 clients stay in greeting (1 line each), 4 log in and say 2 lines, 2 log
    # in and leave: 9 clients, 3 + 4 * 3 + 2 * 2 = 19 lines, 19 replies.
    clients = [await talk(server, [b"hello"], 1) for _ in range(3)]
    clients += [await talk(server, [b"login", b"a", b"bb"], 3) for _ in range(4)]
    clients += [await talk(server, [b"login", b"bye"], 2) for _ in range(2)]
    samples = await scrape(port)

    assert value(samples, "connections", state="reading") == 9
    assert value(samples, "connections", state="closed") == 0
    assert value(samples, "connections_accepted_total") == 9
    assert value(samples, "protocol_connections", state="greeting") == 3
    assert value(samples, "protocol_connections", state="member") == 4
    assert value(samples, "protocol_connections", state="leaving") == 2
    assert value(samples, "transitions_total", **{"from": "greeting", "to": "member",
                                                  "event": "input"}) == 6  # fmt: skip
    assert value(samples, "transitions_total", **{"from": "member", "to": "leaving",
                                                  "event": "input"}) == 2  # fmt: skip
    sent_in = 3 * len(b"hello\n") + 4 * len(b"login\na\nbb\n") + 2 * len(b"login\nbye\n")
    sent_out = 3 * len(b"login first\n") + 4 * len(b"welcome\na\nbb\n") + 2 * len(b"welcome\nbye\n")
    assert value(samples, "received_bytes_total") == sent_in
    # Sent bytes count once the client's TCP stack has acknowledged them.
    async with asyncio.timeout(TIMEOUT):
        while value(await scrape(port), "sent_bytes_total") != sent_out:
            await asyncio.sleep(0.01)
    assert value(samples, "events_handled_total") >= 19 + 9  # lines and connects
    assert value(samples, "handler_errors_total") == 0
    assert value(samples, "serving") == 1
    assert (
        value(
            samples, "info", server="lobby", version=__import__("statemachine_server").__version__
        )
        == 1
    )

    for _, writer in clients:
        writer.close()
    async with asyncio.timeout(TIMEOUT):
        while value(await scrape(port), "connections", state="reading"):
            await asyncio.sleep(0.01)
    samples = await scrape(port)
    assert value(samples, "protocol_connections", state="member") == 0
    # Connections gone: their bytes were kept when they ended.
    assert value(samples, "received_bytes_total") == sent_in
    assert value(samples, "sent_bytes_total") == sent_out
    assert value(samples, "transitions_total", **{"from": "greeting", "to": "member",
                                                  "event": "input"}) == 6  # fmt: skip


async def test_health_and_what_else_the_endpoint_answers(serve_spec: Any) -> None:
    server = await serve_spec(SPEC)
    port = server.metrics.port
    status, _, body = await http(port, b"GET /healthz HTTP/1.1\r\n\r\n")
    assert (status, body) == (200, b"ok\n")
    status, headers, body = await http(port, b"HEAD /metrics HTTP/1.0\r\n\r\n")
    assert status == 200 and body == b"" and int(headers["Content-Length"]) > 1000
    assert (await http(port, b"GET /metrics?x=1 HTTP/1.1\r\n\r\n"))[0] == 200
    assert (await http(port, b"GET / HTTP/1.1\r\n\r\n"))[0] == 404
    status, headers, _ = await http(port, b"POST /metrics HTTP/1.1\r\n\r\n")
    assert (status, headers["Allow"]) == (405, "GET, HEAD")
    assert (await http(port, b"nonsense\r\n\r\n"))[0] == 400
    assert (await http(port, b"GET /metrics HTTP/1.1\r\nX: " + b"y" * 9000))[0] == 431


async def test_a_scraper_that_never_finishes_its_request_is_cut(
    serve_spec: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(endpoint_module, "READ_TIMEOUT", 0.2)
    server = await serve_spec(SPEC)
    status, _, body = await http(server.metrics.port, b"GET /metrics HTTP/1.1\r\n")
    assert (status, body) == (408, b"too slow\n")
    # And the endpoint goes on answering others.
    assert (await http(server.metrics.port, b"GET /healthz HTTP/1.1\r\n\r\n"))[0] == 200


async def test_draining_is_unhealthy(serve_spec: Any) -> None:
    server = await serve_spec(SPEC)
    endpoint = server.metrics
    shutdown = asyncio.create_task(server.kernel.shutdown(deadline=5.0))
    async with asyncio.timeout(TIMEOUT):
        while not server.kernel.shutting_down:
            await asyncio.sleep(0)
    # Asked at once: the drain of a server with no client ends in this tick.
    response = endpoint.respond(b"GET /healthz HTTP/1.1")
    assert response.startswith(b"HTTP/1.1 503 ") and response.endswith(b"\r\n\r\ndraining\n")
    metrics = endpoint.respond(b"GET /metrics HTTP/1.1").partition(b"\r\n\r\n")[2].decode()
    samples = [(s.name, s.labels, s.value) for f in text_string_to_metric_families(metrics)
               for s in f.samples]  # fmt: skip
    assert value(samples, "serving") == 0
    async with asyncio.timeout(TIMEOUT):
        await shutdown


async def test_the_endpoint_closes_when_the_kernel_stops(serve_spec: Any) -> None:
    server = await serve_spec(SPEC)
    port = server.metrics.port
    server.kernel.stop()
    async with asyncio.timeout(TIMEOUT):
        while True:
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError:  # refused, or reset by a socket closing under it
                break
            writer.close()
            await asyncio.sleep(0.01)


def test_without_metrics_nothing_is_counted_and_gotos_stay_inline() -> None:
    plain = load_spec_text(SPEC.replace('  metrics: "127.0.0.1:0"\n', ""), "t.yaml")
    metered = load_spec_text(SPEC, "t.yaml")
    plain_code = "".join(plain.program.sources.values())
    metered_code = "".join(metered.program.sources.values())
    # Both set the state inline; only the metered one counts it, by the state left.
    assert plain_code.count("s.protocol_state = ") == metered_code.count("s.protocol_state = ") == 1
    assert "[s.protocol_state] += 1" not in plain_code and "counted_goto" not in plain_code
    assert metered_code.count("[s.protocol_state] += 1") == 1
    assert metered_code.count("counted_goto") == 1  # to leaving, whose enter actions run


async def test_a_server_without_metrics_makes_plain_connections(serve_spec: Any) -> None:
    server = await serve_spec(SPEC.replace('  metrics: "127.0.0.1:0"\n', ""))
    assert server.connection_class is Connection and server.metrics is None


def test_the_text_format_escapes_what_it_must() -> None:
    family = Family("odd", "counter", 'a "help"\nwith a newline \\')
    family.add(1.5, label='quote " backslash \\ newline \n end')
    family.add(float("inf"), label="inf")
    text = exposition([family])
    [parsed] = text_string_to_metric_families(text)
    assert parsed.documentation == 'a "help"\nwith a newline \\'
    assert [(s.labels["label"], s.value) for s in parsed.samples] == [
        ('quote " backslash \\ newline \n end', 1.5),
        ("inf", float("inf")),
    ]


def test_a_metrics_port_in_use_is_one_line_naming_it_and_exit_1() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        status, _, err = run_cli("run", "--port", "0", "--metrics", f"127.0.0.1:{port}")
    assert status == 1
    assert err.strip().splitlines()[-1] == (
        f"statemachine-server: cannot listen on the metrics address 127.0.0.1:{port}: "
        "Address already in use"
    )


async def test_the_bus_counters_are_there_when_a_bus_is(serve_spec: Any) -> None:
    from types import SimpleNamespace

    from statemachine_server.bus.redisbus import BusStatistics
    from statemachine_server.observe.metrics import Source, collect

    server = await serve_spec(SPEC)
    stats = BusStatistics(node="n1", connected=True, publishing=False, published=7,
                          received=5, dropped=3, reconnects=1, queued=2, groups=4)  # fmt: skip
    runtime = SimpleNamespace(enter={}, bus=SimpleNamespace(statistics=lambda: stats))
    text = exposition(collect(Source(server.kernel, server, runtime)))
    got = {s.name: s.value for f in text_string_to_metric_families(text) for s in f.samples}
    p = "statemachine_server_bus_"
    assert (got[p + "published_total"], got[p + "dropped_total"], got[p + "queued"]) == (7, 3, 2)
    assert (got[p + "connected"], got[p + "publishing"], got[p + "reconnects_total"]) == (1, 0, 1)
    # And none without a bus.
    plain = exposition(collect(Source(server.kernel, server, SimpleNamespace(enter={}, bus=None))))
    assert "_bus_" not in plain
