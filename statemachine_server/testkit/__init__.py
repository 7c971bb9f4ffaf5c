"""A test kit for spec authors: serve a spec in a test, talk to it, check what is left.

* :class:`AsyncSpecServer` / :class:`SpecServer` (and :func:`serve`): a spec
  served in-process, over in-memory transports or TCP on 127.0.0.1, on a
  virtual clock or the real one; clients that ``send``, ``expect`` and
  ``expect_closed``, with failures that show expected against received and
  name the spec rule that answered (:mod:`.harness`, :mod:`.client`, :mod:`.sync`);
* the janitor (:mod:`.janitor`): what a test leaves behind (sessions, timers,
  jobs, child processes, sockets) fails it;
* conversation scripts (:mod:`.script`, :mod:`.conversation`): a test as the
  exchange a person would type, run by ``statemachine-server test`` and
  collected by pytest as ``test_*.conv``;
* exploration (:mod:`.explore`): generated conversations that reach a spec's
  states and rules, and their coverage (``statemachine-server test --explore``);
* the pytest plugin (:mod:`.plugin`, loaded through the ``pytest11`` entry
  point): the ``spec_server`` and ``janitor`` fixtures.

``docs/testing.md`` teaches all of it. This package is above ``language`` (it
serves specs) and below the command line; nothing in the server imports it.
"""

from .client import AsyncClient
from .conversation import Outcome, run_script
from .expect import ExpectationFailed
from .explore import Exploration, explore
from .harness import AsyncSpecServer, load
from .janitor import Janitor, Unclean
from .script import Script, ScriptError, parse, read_script
from .sync import Client, SpecServer, serve

__all__ = [
    "AsyncClient",
    "AsyncSpecServer",
    "Client",
    "ExpectationFailed",
    "Exploration",
    "Janitor",
    "Outcome",
    "Script",
    "ScriptError",
    "SpecServer",
    "Unclean",
    "explore",
    "load",
    "parse",
    "read_script",
    "run_script",
    "serve",
]
