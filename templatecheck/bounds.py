"""Wall-time bounds for code that runs untrusted templates.

A chat template is Python bytecode once Jinja compiles it, so a loop that never ends can be interrupted from
another thread by raising an asynchronous exception in the rendering thread. One watchdog thread serves every
render: arming and disarming a deadline costs a lock and a condition notify, not a thread per render.
"""

from __future__ import annotations

import ctypes
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

T = TypeVar("T")


class Interrupted(BaseException):
    """Raised inside a thread whose deadline passed.

    A ``BaseException``, so that ``except Exception`` in a template runtime cannot swallow it.
    """


class DeadlineExceeded(Exception):
    """The bounded call ran past its deadline."""

    def __init__(self, seconds: float) -> None:
        super().__init__(f"exceeded {seconds:g} s")
        self.seconds = seconds


@dataclass(eq=False)
class _Entry:
    thread_id: int
    deadline: float
    fired: bool = False
    done: bool = False


@dataclass
class _Watchdog:
    entries: set[_Entry] = field(default_factory=set)
    cond: threading.Condition = field(default_factory=threading.Condition)
    thread: threading.Thread | None = None
    #: When the watchdog thread wakes next; arming a later deadline needs no wake-up call.
    wake_at: float = 0.0

    def arm(self, seconds: float) -> _Entry:
        entry = _Entry(threading.get_ident(), time.monotonic() + seconds)
        with self.cond:
            if self.thread is None or not self.thread.is_alive():
                self.thread = threading.Thread(target=self._run, name="templatecheck-watchdog", daemon=True)
                self.thread.start()
            self.entries.add(entry)
            if entry.deadline < self.wake_at:
                self.cond.notify()
        return entry

    def disarm(self, entry: _Entry) -> None:
        with self.cond:
            entry.done = True
            self.entries.discard(entry)
            if entry.fired:
                # The exception may still be pending (not yet delivered): clear it so that it cannot surface
                # in the caller's code after the bounded call has returned.
                _set_async_exc(entry.thread_id, None)

    def _run(self) -> None:
        with self.cond:
            while True:
                now = time.monotonic()
                for entry in [e for e in self.entries if e.deadline <= now and not e.fired]:
                    entry.fired = True
                    _set_async_exc(entry.thread_id, Interrupted)
                pending = [e.deadline for e in self.entries if not e.fired]
                # Idle, it still wakes every half second, so that arming never has to notify it.
                self.wake_at = min(pending) if pending else now + 0.5
                self.cond.wait(timeout=max(0.0, self.wake_at - now))


def _set_async_exc(thread_id: int, exc: type[BaseException] | None) -> None:
    ctypes.pythonapi.PyThreadState_SetAsyncExc(
        ctypes.c_ulong(thread_id), ctypes.py_object(exc) if exc is not None else None
    )


_WATCHDOG = _Watchdog()


def reset_after_fork() -> None:
    """A fresh watchdog for a forked child: the parent's thread does not exist there, and its lock may have
    been held at the fork."""
    global _WATCHDOG
    _WATCHDOG = _Watchdog()


def call_with_deadline(fn: Callable[[], T], seconds: float | None) -> T:
    """Run ``fn()`` in this thread; raise :class:`DeadlineExceeded` once it runs longer than ``seconds``.

    ``seconds=None`` runs ``fn`` unbounded. A long single C call (one huge string operation) is only
    interrupted when it returns, which is why the renderer also bounds sizes.
    """
    if seconds is None:
        return fn()
    entry = _WATCHDOG.arm(seconds)
    try:
        try:
            return fn()
        finally:
            _WATCHDOG.disarm(entry)
    except Interrupted:
        raise DeadlineExceeded(seconds) from None
