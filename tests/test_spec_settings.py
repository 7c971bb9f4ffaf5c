"""``server:`` settings given beside the spec (the command line's, the environment's)."""

from __future__ import annotations

import pytest

from statemachine_server.errors import SpecError
from statemachine_server.language import load_spec_text

SPEC = """\
version: 1
server:
  port: 7000
  log: {max_length: 100}
handlers: {input: [reply: "{input}"]}
"""


def test_given_settings_replace_the_spec_s_key_by_key() -> None:
    spec = load_spec_text(SPEC, "s.yaml", server={"port": 0, "log": {"format": "json"}})
    assert spec.server.port == 0
    # A mapping replaces the keys it names, and keeps the spec's others.
    assert spec.server.log.format == "json"
    assert spec.server.log.max_length == 100
    assert load_spec_text(SPEC, "s.yaml").server.log.format == "text"


def test_given_settings_are_checked_and_their_errors_name_no_line() -> None:
    with pytest.raises(SpecError) as info:
        load_spec_text(SPEC, "s.yaml", server={"port": 70000, "metrics": "nowhere"})
    assert sorted(str(info.value).splitlines()) == [
        "s.yaml: Expected `int` <= 65535 at $.server.port",
        "s.yaml: expected HOST:PORT, e.g. 127.0.0.1:9100 at $.server.metrics",
    ]


@pytest.mark.parametrize(
    ("setting", "error"),
    [
        ("metrics: 9100", "s.yaml:3:12: Expected `str | null`, got `int` at $.server.metrics"),
        ("metrics: 'localhost'", "s.yaml:3:12: expected HOST:PORT"),
        ("metrics: ':65536'", "the port is 0 to 65535"),
        ("log: {redact: [heap.x]}", "s.yaml:3:18: expected a heap name: NAME"),
        ("log: {format: xml}", "(expected one of: 'text', 'json')"),
    ],
)
def test_bad_operations_settings_are_one_line_each(setting: str, error: str) -> None:
    text = f"version: 1\nserver:\n  {setting}\nhandlers: {{input: [close]}}\n"
    with pytest.raises(SpecError) as info:
        load_spec_text(text, "s.yaml")
    assert error in str(info.value)
    assert len(str(info.value).splitlines()) == 1


def test_good_operations_settings_load() -> None:
    text = (
        "version: 1\nserver:\n  metrics: '[::1]:0'\n"
        "  log: {format: json, redact: [password, server.token]}\nhandlers: {input: [close]}\n"
    )
    server = load_spec_text(text, "s.yaml").server
    assert server.metrics == "[::1]:0"
    assert server.log.redact == ["password", "server.token"]
