"""The core: the kernel, its sessions, the connection lifecycle rules and the timers.

Nothing here knows sockets, filters or specs. :mod:`.kernel` holds the event queue
and the component interface that :mod:`statemachine_server.net` and the spec
runtime are built on (trio's ``lowlevel``); :mod:`.lifecycle` owns every rule of a
connection's state machine, as data.
"""
