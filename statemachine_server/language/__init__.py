"""Specs: servers declared in YAML, validated at the edge, compiled to handlers."""

from .loader import builtin_spec_path, load_spec, load_spec_text
from .model import Spec
from .compile import build_server, compile_spec

__all__ = [
    "Spec",
    "build_server",
    "builtin_spec_path",
    "compile_spec",
    "load_spec",
    "load_spec_text",
]
