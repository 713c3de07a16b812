"""A worker process that compiles and renders untrusted templates under operating-system limits.

A chat template is code from an untrusted repository. The in-process bounds of :mod:`templatecheck.render`
stop what runs as Python bytecode, but not a single long C call (comparing two deeply shared lists, one huge
integer operation), nor constant folding while Jinja compiles, nor memory a C routine allocates before any size
check. So every compile and render runs in a child process (its loop: :mod:`templatecheck.child`) with

- an address-space limit (``RLIMIT_AS``, set before each batch to the current size plus a budget), so an
  allocation past it is a ``MemoryError`` in the child, never a swapping parent;
- a CPU-time limit (``RLIMIT_CPU``), so a child the parent can no longer reach still dies;
- a wall deadline per job that the parent enforces by killing the child and starting a fresh one;
- an environment that holds nothing of the parent's (no variables, an empty working directory), so a
  template that escaped the sandbox still finds no secret to print.

Jobs go in batches: the parent writes one frame with many jobs, the child answers each with one frame as it
finishes it, so the parent knows which job a dead or silent child was on. Requests are pickled (parent to
child: trusted); answers are JSON (child to parent: a compromised child cannot make the parent run code).
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import json
import os
import pickle
import select
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from templatecheck import bounds
from templatecheck.bounds import DeadlineExceeded, call_with_deadline

#: A job: ``(verb, *arguments)``; the verbs are the child's (:mod:`templatecheck.child`).
Job = tuple[Any, ...]
#: An answer: ``{"ok": value}`` or ``{"error": kind, "message": text}``.
Answer = dict[str, Any]

_HEADER = struct.Struct(">Q")
#: The largest answer the parent reads: the output bound of 4 M characters, JSON-escaped at worst 12 bytes each.
_MAX_ANSWER = 64 * 1024 * 1024
#: Seconds the parent waits past a job's own bound before it kills the child (the child's watchdog usually
#: answers first, with a clean ``timeout``), and the wait for a job with no bound of its own.
GRACE = 1.0
_STARTUP_SECONDS = 30.0


#: The key of an answer that holds the seconds the child spent on the job (taken off before the answer is used).
TOOK = "took"

#: Error kinds that are a bound exceeded. A batch holds the jobs of one template: once one of them exceeds a
#: bound, that is the template's finding, and the rest of the batch answers with it at once.
BOUND_KINDS = frozenset({"timeout", "output", "memory", "crash"})
#: What an answer given at once, for a template that exceeded a bound before, adds to the first one's message.
REPEATED = " (an earlier render of this template did; it is not rendered again)"


def exceeded(answer: Answer) -> bool:
    """Whether ``answer`` is a bound exceeded (see :data:`BOUND_KINDS`); a child stops its batch there."""
    return answer.get("error") in BOUND_KINDS


def completed(answers: list[Answer], count: int) -> list[Answer]:
    """The ``count`` answers of a batch: those a child gave, and for the jobs after a bound exceeded (where the
    child stopped), that bound again, without running anything."""
    if answers and exceeded(answers[-1]):
        last = answers[-1]
        again = {"error": last["error"], "message": str(last.get("message", "")) + REPEATED}
        answers += [again] * (count - len(answers))
    return answers


class WorkerDied(Exception):
    """The child ended (killed by the parent at a deadline, or by a limit) before it answered a job."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message


# --------------------------------------------------------------------------------------------- the parent


@dataclass(frozen=True)
class Budget:
    """What one job may use: wall seconds (``None``: no bound) and bytes of address space above the
    child's size at the start of the batch (``None``: no bound)."""

    seconds: float | None
    memory_bytes: int | None


class Batch:
    """One batch sent to the render worker: its answers are read when :meth:`all` or :meth:`until` asks for
    them, or when the worker needs its channel for another batch. ``arrived`` is called with the index and the
    answer of each job as the child's answer to it is read, in order; ``done`` once, with the batch, when it has
    them all."""

    def __init__(
        self,
        worker: Worker,
        count: int,
        budget: Budget,
        done: Callable[[Batch], None] | None,
        arrived: Callable[[int, Answer], None] | None = None,
    ) -> None:
        self.worker = worker
        self.count = count
        self.budget = budget
        self.answers: list[Answer] = []
        self._arrived = arrived
        #: Seconds the batch's renders took: the child's own time on each job it answered, the parent's wait
        #: for one it did not (the child died or was stopped), not the parent's work while the child rendered.
        self.seconds = 0.0
        self.finished = False
        self._done = done

    def all(self) -> list[Answer]:
        """Every answer, read from the worker as far as it still owes them."""
        self.until(lambda: False)
        return self.answers

    def until(self, enough: Callable[[], bool]) -> None:
        """Read answers, in order, until ``enough()`` holds or the batch has them all (the answers before
        one asked for are read, those after it stay in the pipe while this process goes on)."""
        with self.worker._lock:
            while not self.finished and not enough():
                self.worker._read(self)

    def _finish(self) -> None:
        if not self.finished:
            self.finished = True
            self.answers = completed(self.answers, self.count)
            if self._done is not None:
                self._done(self)


class Worker:
    """The parent's handle on one child process; started on first use, restarted after it is killed.

    One batch at a time is in flight: :meth:`submit` sends a batch and returns at once, so the parent can go
    on while the child renders; sending the next batch, or :meth:`run`, first reads what the child still owes
    for the one before."""

    def __init__(self) -> None:
        self._process: subprocess.Popen[bytes] | None = None
        self._reader: Reader | None = None
        self._lock = threading.Lock()
        self._home: tempfile.TemporaryDirectory[str] | None = None
        self._pending: Batch | None = None
        #: Children started in this process (the first start and every restart after a kill).
        self.starts = 0

    def run(self, jobs: Sequence[Job], budget: Budget) -> list[Answer]:
        """The answers to ``jobs`` (one template's), in order. A job the child does not answer within its
        deadline, or dies on, is answered ``{"error": kind, ...}`` (kinds ``timeout``, ``memory``, ``crash``),
        the child is replaced, and the rest of the batch answers with that bound at once (see
        :data:`BOUND_KINDS`)."""
        return self.submit(jobs, budget).all()

    def submit(
        self,
        jobs: Sequence[Job],
        budget: Budget,
        done: Callable[[Batch], None] | None = None,
        arrived: Callable[[int, Answer], None] | None = None,
    ) -> Batch:
        """Send ``jobs`` and return at once; their answers are read when :meth:`Batch.all` or
        :meth:`Batch.until` asks for them or the next batch is sent (with the bounds of :meth:`run`);
        ``arrived`` gets each answer the child gives as it is read, ``done`` the batch once the last is in."""
        batch = Batch(self, len(jobs), budget, done, arrived)
        with self._lock:
            self._settle()
            if not jobs:
                batch._finish()
                return batch
            try:
                self._send(list(jobs), budget)
            except WorkerDied as died:
                self._stop()
                batch.answers.append({"error": died.kind, "message": died.message})
                batch._finish()
                return batch
            self._pending = batch
        return batch

    def settle(self) -> None:
        """Read whatever the child still owes for the batch in flight (its ``done`` runs)."""
        with self._lock:
            self._settle()

    def _settle(self) -> None:
        while self._pending is not None:
            self._read(self._pending)

    def _read(self, batch: Batch) -> None:
        """One more answer of ``batch`` (the one in flight); its end once it has them all, or a bound ended it."""
        assert self._pending is batch
        began = time.monotonic()
        try:
            answer = self._receive(batch.budget)
        except WorkerDied as died:
            self._pending = None
            self._stop()
            answer = {"error": died.kind, "message": died.message}
        took = answer.pop(TOOK, None)
        if isinstance(took, (int, float)) and 0 <= took < 1e6:
            batch.seconds += float(took)
        else:
            batch.seconds += time.monotonic() - began
        batch.answers.append(answer)
        if batch._arrived is not None:
            batch._arrived(len(batch.answers) - 1, answer)
        if len(batch.answers) >= batch.count or exceeded(answer):
            self._pending = None
            batch._finish()

    def close(self) -> None:
        """Stop the child, once it has answered the batch in flight (whose renders a caller may still ask for)."""
        with self._lock:
            self._settle()
            self._stop()

    # ----------------------------------------------------------------------------------------- internals

    def _child(self) -> subprocess.Popen[bytes]:
        if self._process is None or self._process.poll() is not None:
            if self._home is None:
                self._home = tempfile.TemporaryDirectory(prefix="templatecheck-worker-")
            self._process = subprocess.Popen(
                [sys.executable, "-m", "templatecheck.child"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                cwd=self._home.name,
                env=_child_environment(),
                close_fds=True,
            )
            assert self._process.stdout is not None and self._process.stdin is not None
            widen(self._process.stdin.fileno())
            widen(self._process.stdout.fileno())  # answers not read yet do not stop the child
            self._reader = Reader(self._process.stdout.fileno())
            self.starts += 1
            self._wait_ready()
        return self._process

    def _wait_ready(self) -> None:
        assert self._reader is not None
        answer = self._reader.frame(time.monotonic() + _STARTUP_SECONDS)
        if answer is None or json.loads(answer) != {"ready": True}:
            self._stop()
            raise RuntimeError(
                "templatecheck's render worker did not start (run `python -m templatecheck.child`)"
            )

    def _send(self, jobs: list[Job], budget: Budget) -> None:
        process = self._child()
        assert process.stdin is not None
        payload = pickle.dumps((budget, jobs), protocol=pickle.HIGHEST_PROTOCOL)
        try:
            process.stdin.write(_HEADER.pack(len(payload)) + payload)
            process.stdin.flush()
        except (BrokenPipeError, OSError):
            raise WorkerDied("crash", "the render worker ended unexpectedly") from None

    def _receive(self, budget: Budget) -> Answer:
        process, reader = self._process, self._reader
        assert process is not None and reader is not None
        wait = budget.seconds + GRACE if budget.seconds is not None else None
        deadline = time.monotonic() + wait if wait is not None else None
        try:
            frame = reader.frame(deadline)
        except _FrameTooLarge:
            raise WorkerDied("output", "the render worker's answer exceeded 64 MB") from None
        if frame is None:
            raise self._death(process, budget)
        answer = json.loads(frame)
        if not isinstance(answer, dict):
            raise WorkerDied("crash", "the render worker answered something that is not an answer")
        return answer

    def _death(self, process: subprocess.Popen[bytes], budget: Budget) -> WorkerDied:
        """Why ``process`` gave no answer: still running past the deadline (killed now), or ended (its pipe
        closed: its exit status is waited for, as it may not be there yet)."""
        if self._reader is not None and self._reader.ended:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=GRACE)
        if process.poll() is None:
            process.kill()
            process.wait()
            return _why(None, budget)
        return _why(process.returncode, budget)

    def _stop(self) -> None:
        process, self._process, self._reader = self._process, None, None
        if process is not None:
            end(process)
        pending, self._pending = self._pending, None
        if pending is not None and not pending.finished:  # stopped with answers still owed
            pending.answers.append({"error": "crash", "message": "the render worker was stopped"})
            pending._finish()


#: The pipe buffer a batch of jobs is written into (Linux's default is 64 KiB, less than a batch of drawn
#: conversations: each write would wait for the child to read the one before).
PIPE_BYTES = 1 << 20


def widen(fd: int) -> None:
    """Give the pipe ``fd`` a buffer of :data:`PIPE_BYTES` where the system allows it (a smaller system limit,
    or no such call: the default stays)."""
    import fcntl

    setting = getattr(fcntl, "F_SETPIPE_SZ", None)
    if setting is not None:
        with contextlib.suppress(OSError):
            fcntl.fcntl(fd, setting, PIPE_BYTES)


def end(process: subprocess.Popen[bytes]) -> None:
    """Kill a child we talk to over pipes, reap it and close its pipes (the render worker, the Node process)."""
    with contextlib.suppress(OSError):
        process.kill()
    with contextlib.suppress(OSError, subprocess.TimeoutExpired):
        process.wait(timeout=5)
    for stream in (process.stdin, process.stdout):
        if stream is not None:
            with contextlib.suppress(OSError):
                stream.close()


def _why(code: int | None, budget: Budget) -> WorkerDied:
    """Why a child gave no answer, from its exit status (``None``: it was still running, and was killed)."""
    if code is None:
        return WorkerDied("timeout", f"render exceeded {budget.seconds:g} s (the render worker was stopped)")
    if code in (-signal.SIGXCPU, -signal.SIGKILL):
        return WorkerDied("timeout", "render exceeded its CPU-time limit (the render worker was stopped)")
    if code in (-signal.SIGSEGV, -signal.SIGABRT, -signal.SIGBUS) and budget.memory_bytes is not None:
        return WorkerDied(
            "memory",
            f"render exhausted the memory limit of {budget.memory_bytes / 2**20:,.0f} MiB "
            f"(the render worker ended with signal {-code})",
        )
    return WorkerDied("crash", f"the render worker ended unexpectedly (exit status {code})")


def _child_environment() -> dict[str, str]:
    """Only what the child needs to import this package and load a local tokenizer; nothing secret."""
    package_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {
        "PYTHONPATH": os.pathsep.join(dict.fromkeys([package_root, *(p for p in sys.path if p)])),
        "PYTHONDONTWRITEBYTECODE": "1",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "OMP_NUM_THREADS": "1",
    }
    if "PATH" in os.environ:
        env["PATH"] = os.environ["PATH"]
    return env


class _FrameTooLarge(Exception):
    pass


class Reader:
    """Frames from a pipe, read in large chunks (one wake-up serves every answer already written)."""

    def __init__(self, fd: int, limit: int = _MAX_ANSWER) -> None:
        self.fd = fd
        self.limit = limit
        self.buffer = bytearray()
        #: Whether the writer closed its end (the child ended), as opposed to a deadline passed.
        self.ended = False

    def _fill(self, size: int, deadline: float | None) -> bool:
        while len(self.buffer) < size:
            timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
            ready, _, _ = select.select([self.fd], [], [], timeout)
            if not ready:
                return False
            chunk = os.read(self.fd, 1 << 20)
            if not chunk:
                self.ended = True
                return False
            self.buffer += chunk
        return True

    def frame(self, deadline: float | None) -> bytes | None:
        """The next frame, or ``None`` when the deadline passes or the writer ends first."""
        if not self._fill(_HEADER.size, deadline):
            return None
        (size,) = _HEADER.unpack_from(self.buffer)
        if size > self.limit:
            raise _FrameTooLarge
        if not self._fill(_HEADER.size + size, deadline):
            return None
        frame = bytes(self.buffer[_HEADER.size : _HEADER.size + size])
        del self.buffer[: _HEADER.size + size]
        return frame


_WORKER: Worker | None = None


def shared() -> Worker:
    """This process's worker (one per process, as pytest-xdist workers are processes)."""
    global _WORKER
    if _WORKER is None:
        _WORKER = Worker()
        atexit.register(_WORKER.close)
    return _WORKER


# ------------------------------------------------------------------------------------------- forked tasks


class ForkServer:
    """Calls of one function, each on arguments sent to it, in a child forked from this process and kept for
    the batches that follow (the fork, and the child's first touch of every page it shares with this process,
    are paid once rather than per batch), under the render worker's bounds.

    For calls into libraries that render templates themselves (transformers' ``apply_chat_template``):
    ``function`` runs in the child on objects it had at the fork (a tokenizer), without loading them again and
    with none of this process's environment variables or descriptors. Its arguments are pickled (parent to
    child: trusted), its answers are JSON. A job that exceeds a bound ends the child, as do a
    deadline passed or a death; the next batch forks a fresh one.
    """

    def __init__(self, function: Callable[[Any], Any]) -> None:
        self.function = function
        self._pid: int | None = None
        self._requests = -1
        self._reader: Reader | None = None
        #: Children forked so far.
        self.starts = 0

    def run(self, arguments: Sequence[Any], budget: Budget) -> list[Answer]:
        """The answers of ``function`` on each of ``arguments``, in order: each ``{"ok": value}`` (a JSON value) or
        ``{"error": kind, "message": text}``; after a bound exceeded, that bound again for the rest."""
        if not arguments:
            return []
        payload = pickle.dumps((budget, list(arguments)), protocol=pickle.HIGHEST_PROTOCOL)
        answers: list[Answer] = []
        try:
            self._send(payload)
            assert self._reader is not None
            while len(answers) < len(arguments):
                deadline = time.monotonic() + budget.seconds + GRACE if budget.seconds is not None else None
                frame = self._reader.frame(deadline)
                if frame is None:
                    answers.append(self._death(budget))
                    break
                answers.append(json.loads(frame))
                if exceeded(answers[-1]):
                    self.close()  # the child ended there
                    break
        except _FrameTooLarge:
            self.close()
            answers.append({"error": "output", "message": "the answer exceeded 64 MB"})
        return completed(answers, len(arguments))

    def close(self) -> None:
        pid, self._pid, self._reader = self._pid, None, None
        if self._requests >= 0:
            with contextlib.suppress(OSError):
                os.close(self._requests)
            self._requests = -1
        if pid is not None:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)

    # ----------------------------------------------------------------------------------------- internals

    def _send(self, payload: bytes) -> None:
        for attempt in (1, 2):
            if self._pid is None:
                self._start()
            try:
                _write_all(self._requests, _HEADER.pack(len(payload)) + payload)
                return
            except OSError:  # the child ended between batches: fork a fresh one, once
                self.close()
                if attempt == 2:
                    raise

    def _start(self) -> None:
        import warnings

        requests_read, requests_write = os.pipe()
        answers_read, answers_write = os.pipe()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # the child runs no thread of this process's
            pid = os.fork()
        if pid == 0:  # pragma: no cover (the child; its answers are what the tests see)
            try:
                _become_child(keep=(requests_read, answers_write))
                self._serve(requests_read, answers_write)
            finally:
                os._exit(0)
        os.close(requests_read)
        os.close(answers_write)
        widen(requests_write)
        self._pid, self._requests, self._reader = pid, requests_write, Reader(answers_read)
        self.starts += 1

    def _serve(self, requests: int, answers: int) -> None:  # pragma: no cover (runs in the child)
        reader = Reader(requests, limit=sys.maxsize)
        with os.fdopen(answers, "wb") as sink:
            while (frame := reader.frame(None)) is not None:
                budget, arguments = pickle.loads(frame)
                limit(budget, len(arguments))
                for argument in arguments:
                    answer = _run_task(functools.partial(self.function, argument), budget)
                    write_answer(sink, answer)
                    if exceeded(answer):
                        return

    def _death(self, budget: Budget) -> Answer:
        """Why the child gave no answer (still running past the deadline: it is killed now); it is gone after."""
        pid = self._pid
        code = None
        if pid is not None:
            with contextlib.suppress(ChildProcessError):
                done, status = os.waitpid(pid, os.WNOHANG)
                code = os.waitstatus_to_exitcode(status) if done else None
                if done:
                    self._pid = None
        self.close()
        died = _why(code, budget)
        return {"error": died.kind, "message": died.message}


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _become_child(keep: tuple[int, ...]) -> None:
    """A forked child keeps nothing it does not need: no environment, no terminal, no descriptor of this
    process's but ``keep``, a fresh watchdog."""
    os.environ.clear()
    os.chdir("/")
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    start = 3
    for fd in sorted(keep):
        os.closerange(start, fd)
        start = fd + 1
    os.closerange(start, os.sysconf("SC_OPEN_MAX"))
    bounds.reset_after_fork()


def _run_task(task: Callable[[], Any], budget: Budget) -> Answer:
    try:
        return {"ok": call_with_deadline(task, budget.seconds)}
    except DeadlineExceeded:
        return {"error": "timeout", "message": f"exceeded {budget.seconds:g} s"}
    except MemoryError:
        return {"error": "memory", "message": out_of_memory(budget)}
    except Exception as exc:
        return {"error": "raised", "message": f"{type(exc).__name__}: {exc}"}


# ------------------------------------------------------------------- the limits both kinds of child set


def limit(budget: Budget, jobs: int) -> None:
    """The limits of a batch of ``jobs`` jobs: memory above the child's size now, CPU time for all of them."""
    limit_memory(budget.memory_bytes)
    limit_cpu(None if budget.seconds is None else (budget.seconds + GRACE) * jobs)


def limit_memory(budget: int | None) -> None:
    import resource

    if budget is None:
        resource.setrlimit(
            resource.RLIMIT_AS, (resource.RLIM_INFINITY, resource.getrlimit(resource.RLIMIT_AS)[1])
        )
        return
    with open("/proc/self/statm") as statm:
        size = int(statm.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    hard = resource.getrlimit(resource.RLIMIT_AS)[1]
    soft = size + budget
    if hard != resource.RLIM_INFINITY:
        soft = min(soft, hard)
    resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def limit_cpu(seconds: float | None) -> None:
    """The child dies (``SIGXCPU``) once the batch has used its jobs' bounds and grace in CPU time."""
    import resource

    hard = resource.getrlimit(resource.RLIMIT_CPU)[1]
    if seconds is None:
        resource.setrlimit(resource.RLIMIT_CPU, (hard, hard))
        return
    usage = resource.getrusage(resource.RUSAGE_SELF)
    soft = int(usage.ru_utime + usage.ru_stime + seconds) + 2
    if hard != resource.RLIM_INFINITY:
        soft = min(soft, hard)
    resource.setrlimit(resource.RLIMIT_CPU, (soft, hard))


def write_answer(stream: Any, answer: Answer) -> None:
    try:
        payload = json.dumps(answer, ensure_ascii=True).encode("ascii")
    except (TypeError, ValueError) as exc:
        payload = json.dumps({"error": "crash", "message": f"an answer did not serialize: {exc}"}).encode()
    stream.write(_HEADER.pack(len(payload)) + payload)
    stream.flush()


def out_of_memory(budget: Budget) -> str:
    limit = f" of {budget.memory_bytes / 2**20:,.0f} MiB" if budget.memory_bytes is not None else ""
    return f"render exhausted the memory limit{limit}"
