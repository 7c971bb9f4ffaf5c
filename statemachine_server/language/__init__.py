"""Specs: servers declared in YAML, validated at the edge, compiled once, run as handlers.

From a spec file to running handlers: :mod:`.loader` reads and validates it into
the typed :mod:`.model`; :mod:`.compile` checks what it means and compiles it
into a :class:`~.runtime.Program`: each rule's condition (:mod:`.conditions`),
each action (:mod:`.actions`; ``call``, ``work`` and ``run`` in :mod:`.outside`,
heap writes in :mod:`.assign` over the bounded data of :mod:`.data`), every
expression and template field through the expression language
(:mod:`.expressions`, :mod:`.functions`, :mod:`.templates`), and each handler
generated as one Python function (:mod:`.inline`; the echo shape by
:mod:`.codegen`). :mod:`.build` runs the program as a server; :mod:`.runtime` is
what runs per message besides the generated code.
"""

from .build import build_server
from .compile import compile_spec
from .loader import builtin_spec_path, load_spec, load_spec_text
from .model import Spec
from .runtime import goto, raise_event

__all__ = [
    "Spec",
    "build_server",
    "builtin_spec_path",
    "compile_spec",
    "goto",
    "load_spec",
    "load_spec_text",
    "raise_event",
]
