"""Several processes' metrics as one view (observe.merge), read by prometheus-client's parser."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from statemachine_server.observe.merge import merge
from statemachine_server.observe.metrics import Family, exposition


def worker(connections: int, started: float, serving: int, moves: dict[str, int]) -> str:
    transitions = Family("transitions", "counter", "Gotos.")
    for target, count in moves.items():
        transitions.add(count, **{"from": "a", "to": target, "event": "input"})
    return exposition([
        Family("info", "gauge", "Info.").add(1, server="s", version="1"),
        Family("start_time_seconds", "gauge", "Start.").add(started),
        Family("serving", "gauge", "Serving.").add(serving),
        Family("connections", "gauge", "By state.").add(connections, state="reading")
        .add(1, state="closing"),
        transitions,
        Family("sent_bytes", "counter", "Bytes.").add(1.5),
    ])  # fmt: skip


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_samples_are_summed_but_where_a_sum_would_lie() -> None:
    merged = merge([
        worker(3, 100.0, 1, {}),
        worker(4, 90.0, 0, {"b": 2}),
        worker(5, 95.0, 1, {"b": 1, "c": 7}),
    ])  # fmt: skip
    got = samples(merged)
    p = "statemachine_server_"
    assert got[(p + "connections", (("state", "reading"),))] == 12
    assert got[(p + "connections", (("state", "closing"),))] == 3
    assert got[(p + "transitions_total", (("event", "input"), ("from", "a"), ("to", "b")))] == 3
    assert got[(p + "transitions_total", (("event", "input"), ("from", "a"), ("to", "c")))] == 7
    assert got[(p + "sent_bytes_total", ())] == 4.5
    assert got[(p + "start_time_seconds", ())] == 90.0  # the earliest
    assert got[(p + "serving", ())] == 0  # one draining: the server is
    assert got[(p + "info", (("server", "s"), ("version", "1")))] == 1
    # Each family's HELP and TYPE once, before its samples.
    assert merged.count("# TYPE statemachine_server_transitions_total counter") == 1
    assert merged.count("# HELP statemachine_server_connections ") == 1


def test_one_text_merges_to_itself() -> None:
    text = worker(3, 100.0, 1, {"b": 2})
    assert samples(merge([text])) == samples(text)
