"""The render worker's child process (``python -m templatecheck.child``): its loop and the jobs it runs.

:mod:`templatecheck.worker` (the parent's side, which :mod:`templatecheck.render` drives) starts this module
as a program; the jobs run :mod:`templatecheck.render`'s own code here, under the limits the worker sets.
Keeping the child's side apart keeps the imports one way: render imports the worker, this imports both.
"""

from __future__ import annotations

import base64
import gc
import pickle
import sys
import time
from typing import Any

from templatecheck.bounds import DeadlineExceeded, call_with_deadline
from templatecheck.render import (
    MAX_KEPT,
    RenderError,
    compile_template,
    compiled_code,
    install_compiled,
    render_here,
    undeclared_variables,
)
from templatecheck.worker import (
    TOOK,
    Answer,
    Budget,
    Job,
    Reader,
    exceeded,
    limit,
    out_of_memory,
    write_answer,
)


def _answer(job: Job, budget: Budget) -> Answer:
    """The answer to one job; whatever the job raises is an error answer, never the child's end."""
    try:
        return {"ok": _VERBS[job[0]](budget, *job[1:])}
    except RenderError as error:
        if error.kind in ("memory", "output"):
            gc.collect()  # what the template built is garbage now: free it before the next job's limit
        message = out_of_memory(budget) if error.kind == "memory" else error.message
        return {"error": error.kind, "message": message}
    except MemoryError:
        return {"error": "memory", "message": out_of_memory(budget)}
    except RecursionError:
        return {"error": "raised", "message": "template raised RecursionError: recursion too deep"}
    except Exception as exc:
        return {"error": "crash", "message": f"{type(exc).__name__}: {exc}"}


def _render(budget: Budget, source: str, context: dict[str, Any], clock: Any, max_chars: int | None) -> Any:
    rendered = render_here(source, context, seconds=budget.seconds, max_chars=max_chars, clock=clock)
    return [rendered.text, rendered.generation_spans]


def _compile(budget: Budget, source: str) -> None:
    try:
        call_with_deadline(lambda: compile_template(source), budget.seconds)
    except DeadlineExceeded:
        raise RenderError("timeout", f"compiling the template exceeded {budget.seconds:g} s") from None


def _compiled(budget: Budget, source: str) -> dict[str, Any]:
    """The template compiled (and kept for the renders that follow): the names it reads without defining
    them, and its code for the parent to keep between runs (``None`` when larger than it keeps)."""
    _compile(budget, source)
    code, seconds = compiled_code(source)
    return {
        "names": sorted(undeclared_variables(source)),
        "code": base64.b64encode(code).decode("ascii") if len(code) <= MAX_KEPT else None,
        "seconds": seconds,
    }


def _install(budget: Budget, source: str, code: bytes, names: list[str], seconds: float) -> None:
    """Take the code an earlier run kept as the compiled template (the parent read it from its cache)."""
    install_compiled(source, code, frozenset(names), seconds)


def _minijinja(
    budget: Budget, source: str, context: dict[str, Any], clock: Any, max_chars: int | None
) -> str:
    from templatecheck.engines import render_minijinja_here

    return render_minijinja_here(source, context, clock, max_chars)


_VERBS: dict[str, Any] = {
    "render": _render,
    "compile": _compile,
    "compiled": _compiled,
    "install": _install,
    "minijinja": _minijinja,
}


def main() -> None:
    """The child's loop: read a batch, answer each job, until the parent closes the pipe."""
    reader, sink = Reader(sys.stdin.buffer.fileno(), limit=1 << 40), sys.stdout.buffer
    sys.stdout = sys.stderr  # nothing a library prints may corrupt the channel
    write_answer(sink, {"ready": True})
    while True:
        frame = reader.frame(None)
        if frame is None:
            return
        budget, jobs = pickle.loads(frame)
        limit(budget, len(jobs))
        for job in jobs:
            began = time.perf_counter()
            answer = _answer(job, budget)
            answer[TOOK] = time.perf_counter() - began
            write_answer(sink, answer)
            if exceeded(answer):
                break  # the parent answers the rest of the batch with it (see BOUND_KINDS)


if __name__ == "__main__":
    main()
