"""Process groups: one HTTP endpoint for every process of a pre-fork or
spawn server (gunicorn, uvicorn ``--workers``, Celery prefork,
``multiprocessing`` pools).

How it works (docs/http-endpoint.md, "Process groups", says it for users)::

    $TMPDIR/pysampler-<uid>/            mode 0700, checked: owner, mode, no symlink
      <group id>/                       one per group, made by its founder
        leader.lock                     held (fcntl lock) by the process on the port
        port                            the port the group serves on
        <pid>.sock                      one Unix socket per member (not the leader)

    HTTP client ──TCP──> leader (holds leader.lock, serves PYSAMPLER_PORT)
                           │  one request: connect to every <pid>.sock,
                           │  send {"op": "cpu", "end": t}, read each reply
                           ├──unix──> member 101 ┐ each starts its own session,
                           ├──unix──> member 102 ├ stops at t, answers with its
                           └─socketpair─> itself ┘ profile; merged with a pid each

- **Who joins.** The start-up hook of the first process with
  ``PYSAMPLER_PORT`` (the *founder*) makes a group directory and puts its
  path in ``PYSAMPLER_GROUP``. Every process that inherits both variables
  and runs Python with the hook joins instead of binding the port (spawned
  workers, ``subprocess`` children), and so does every forked child of a
  member (an at-fork handler). Unsetting ``PYSAMPLER_PORT`` in a child's
  environment keeps it out.
- **Control channel.** Unix domain sockets in a directory only the user
  can enter; each end also checks the other's uid (``SO_PEERCRED`` on
  Linux, ``LOCAL_PEERCRED`` on macOS) and drops a connection from anyone
  else. Never a network port; never a Linux abstract socket (those have no
  permissions at all).
- **Leader.** The founder takes ``leader.lock`` and the port. Each member's
  one thread (``pysampler-group``) accepts control connections and, once a
  second, tries the lock: when the leader exits, the kernel releases its
  lock, and the first member to take it binds the port again. fcntl locks
  belong to a process and are not inherited by ``fork``, so a child never
  holds its parent's.
- **A request** goes to every member at once with an absolute end time
  (``CLOCK_MONOTONIC`` is shared by all processes), so all sample the same
  window. A member that dies closes its connection: the profile is merged
  without it and says which pid was lost; a member that does not answer by
  the end plus :data:`~pysampler.group.leader.GRACE` is left out the same
  way. Nothing waits longer.
- **Idle cost** of a member: one thread, a listening socket and the lock
  file's descriptor; no sampler, nothing imported beyond pysampler itself
  until a request comes.

Windows (no fork, no fcntl locks) keeps the single-process endpoint.
"""

from __future__ import annotations

import os
import socket
import sys

#: the environment variable that names a group's directory
ENV = "PYSAMPLER_GROUP"


def supported() -> bool:
    """Whether this platform has what groups need (Unix sockets, fork,
    fcntl locks): Linux, macOS and the BSDs; not Windows."""
    return sys.platform != "win32" and hasattr(socket, "AF_UNIX") and hasattr(os, "fork")
