"""Preemption safety for training runs: a lock that keeps two runs out of one workdir, and SIGTERM/SIGINT
handling that lets the loop save a checkpoint at the next step boundary and stop cleanly.

Hard kills (``kill -9``, lost machines) need nothing here: Orbax commits a checkpoint atomically (a step
directory appears complete or not at all) and :class:`~jaxsbert.training.checkpoint.Checkpointer` falls
back to the previous checkpoint when the latest one is unreadable.
"""
from __future__ import annotations

import errno
import fcntl
import logging
import os
import signal
import socket
import threading
from typing import Any

log = logging.getLogger("jaxsbert")

LOCK_FILE = ".jaxsbert.lock"


class WorkdirLockedError(RuntimeError):
    pass


class WorkdirLock:
    """An exclusive ``flock`` on ``WORKDIR/.jaxsbert.lock`` for the life of a run.

    The kernel drops the lock when the process dies, however it dies, so a killed run never leaves a stale
    lock behind; the file itself stays (it holds the last holder's pid and host, for the error message).
    With several processes (multi-host), each process locks its own file ``.jaxsbert.lock.<process index>``.
    """

    def __init__(self, workdir: str, process_index: int = 0, process_count: int = 1):
        self.workdir = os.path.abspath(workdir)
        name = LOCK_FILE if process_count == 1 else f"{LOCK_FILE}.{process_index}"
        self.path = os.path.join(self.workdir, name)
        self._fd: int | None = None

    def acquire(self) -> "WorkdirLock":
        os.makedirs(self.workdir, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            holder = _read_holder(fd)
            os.close(fd)
            if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            raise WorkdirLockedError(
                f"workdir {self.workdir} is in use by another training run ({holder}; lock file {self.path}). "
                "Two runs must not write the same workdir: wait for that run to finish, stop it, or choose "
                "another --workdir") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} on host {socket.gethostname()}\n".encode())
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "WorkdirLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _read_holder(fd: int) -> str:
    try:
        text = os.pread(fd, 256, 0).decode(errors="replace").strip()
    except OSError:
        text = ""
    return text or "pid unknown"


class StopSignals:
    """Catches SIGTERM and SIGINT while training: the first one asks the loop to checkpoint and stop at the
    next step boundary (``requested``); a second SIGINT raises ``KeyboardInterrupt`` at once.

    Handlers can only be installed from the main thread; elsewhere this does nothing (signals keep their
    default action). With several processes, :meth:`should_stop` agrees across processes, so that all of
    them stop after the same step.
    """

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self, process_count: int = 1, sync_every: int = 1):
        self.signum: int | None = None
        self.process_count = process_count
        self.sync_every = max(int(sync_every), 1)
        self._previous: dict[int, Any] = {}

    @property
    def requested(self) -> bool:
        return self.signum is not None

    @property
    def name(self) -> str | None:
        return None if self.signum is None else signal.Signals(self.signum).name

    def should_stop(self, step: int) -> bool:
        """Whether to stop before taking step ``step + 1``; the same answer on every process."""
        if self.process_count == 1:
            return self.requested
        if step % self.sync_every:
            return False
        from jax.experimental import multihost_utils
        import numpy as np

        flags = multihost_utils.process_allgather(np.int32(self.signum or 0))
        signum = int(np.max(flags))
        if signum and self.signum is None:
            self.signum = signum
        return bool(signum)

    def _handle(self, signum, frame) -> None:
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        if self.signum is None:
            self.signum = signum
            log.warning("received %s: saving a checkpoint and stopping after the current step "
                        "(press Ctrl-C again to stop at once, without saving)", signal.Signals(signum).name)

    def __enter__(self) -> "StopSignals":
        if threading.current_thread() is threading.main_thread():
            for s in self.SIGNALS:
                self._previous[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, signal.SIG_DFL if handler is None else handler)
        self._previous.clear()
