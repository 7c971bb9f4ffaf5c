"""Long tasks that never stall other clients: chunked work, pools, child processes.

This package sits below the kernel: the session's ``work()`` and ``run_process()``
start these, and they see the kernel only through :mod:`.host`'s protocols.

* :class:`Job` (``session.work(generator)``): a generator stepped in time slices
  between the kernel's ticks (:mod:`.job` explains the schedule);
* :func:`sleep`, :func:`in_thread`, :func:`in_process`: what a step may yield to
  wait for a timer or for a call in a pool (:mod:`.pools`) without blocking;
* :class:`Child` (``session.run_process(argv)``): a child process whose output lines
  and exit status arrive as queued events (:mod:`.child`).
"""

from .child import Child
from .job import Cancelled, Job, WorkTimeout, in_process, in_thread, sleep

__all__ = ["Cancelled", "Child", "Job", "WorkTimeout", "in_process", "in_thread", "sleep"]
