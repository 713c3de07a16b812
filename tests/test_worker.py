"""The render worker: templates compile and render in a child process under OS limits, and every bound a
template exceeds is paid once."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import pytest

from templatecheck.render import Call, Limits, Renderer, RenderError, check_template
from templatecheck.worker import REPEATED, Budget, ForkServer, Worker, exceeded, shared

HI = [{"role": "user", "content": "hi"}]
CHAT = "{% for m in messages %}<{{ m.role }}>{{ m.content }}{% endfor %}"


def render(source: str, limits: Limits | None = None) -> str:
    return Renderer(limits=limits or Limits(seconds=1.0)).render(source, HI).text


def test_a_render_in_the_worker_is_the_render() -> None:
    assert render(CHAT) == "<user>hi"
    batch = Renderer().render_many(CHAT, [Call(HI), Call([{"role": "user", "content": "yo"}])])
    assert [r.text for r in batch if not isinstance(r, RenderError)] == ["<user>hi", "<user>yo"]


def test_constant_folding_while_compiling_is_bounded() -> None:
    """Jinja folds constant expressions while it compiles, before any render bound: in the worker, that is
    a timeout like any other, and the next template renders."""
    start = time.perf_counter()
    with pytest.raises(RenderError) as error:
        render("{{ [1, 2, 3] | slice(1000000000000) | sum(start=[]) }}")
    assert error.value.kind == "timeout"
    assert time.perf_counter() - start < 6
    assert render(CHAT) == "<user>hi"


def test_one_long_c_call_is_stopped_by_killing_the_worker() -> None:
    """A single huge integer power never returns to the interpreter, so no in-process watchdog can stop it;
    the parent kills the worker at the deadline."""
    worker = shared()
    starts = worker.starts
    start = time.perf_counter()
    with pytest.raises(RenderError) as error:
        render("{{ (10 ** 10000) ** 10000 > 1 }}")
    assert error.value.kind == "timeout" and "the render worker was stopped" in error.value.message
    assert time.perf_counter() - start < 6
    assert render(CHAT) == "<user>hi"
    assert worker.starts == starts + 1


@pytest.mark.parametrize(
    "source",
    [
        "{{ [1, 2] | tojson(indent=1500000000) }}",
        "{{ '%*s' % (1500000000, 'x') }}",
        "{{ ('a' * 3000000) | replace('a', 'b' * 1000) }}",
    ],
)
def test_memory_past_the_size_guards_is_the_worker_limit(source: str) -> None:
    """Values a C routine allocates before any size guard sees them hit the worker's address-space limit."""
    with pytest.raises(RenderError) as error:
        render(source, Limits(seconds=5.0, memory_bytes=256 << 20))
    assert error.value.kind == "memory"
    assert error.value.message == "render exhausted the memory limit of 256 MiB"
    assert render(CHAT) == "<user>hi"


def test_a_bound_is_paid_once_per_template() -> None:
    renderer = Renderer(limits=Limits(seconds=0.5))
    looping = "{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}"
    start = time.perf_counter()
    with pytest.raises(RenderError, match=r"render exceeded 0\.5 s"):
        renderer.render(looping, HI)
    first = time.perf_counter() - start
    start = time.perf_counter()
    for i in range(20):
        with pytest.raises(RenderError, match=r"render exceeded 0\.5 s$"):  # the render that exceeded it
            renderer.render(looping, HI)
        with pytest.raises(RenderError, match="an earlier render of this template did") as error:
            renderer.render(looping, [{"role": "user", "content": f"other {i}"}])
        assert error.value.kind == "timeout"
    assert time.perf_counter() - start < first / 5
    assert renderer.render(CHAT, HI).text == "<user>hi"


def test_a_slow_template_stops_at_its_budget() -> None:
    """A template that stays under the per-render bound but is slow costs at most its budget in a run (each
    render a different conversation: an equal one is answered from the first)."""
    renderer = Renderer(limits=Limits(seconds=2.0, budget_seconds=0.5))
    slow = "{% for a in range(1000) %}{% for b in range(1000) %}{% endfor %}{% endfor %}ok"
    start = time.perf_counter()
    kinds = []
    for i in range(40):
        try:
            renderer.render(slow, [{"role": "user", "content": f"hi {i}"}])
            kinds.append("ok")
        except RenderError as error:
            kinds.append(error.kind)
            assert "renders took more than 0.5 s in this run" in error.message
    assert "ok" in kinds and kinds[-1] == "budget"
    assert time.perf_counter() - start < 3
    assert renderer.render(CHAT, HI).text == "<user>hi"


def test_a_dead_worker_is_restarted() -> None:
    worker = Worker()
    try:
        budget = Budget(2.0, None)
        assert worker.run([("compile", CHAT)], budget) == [{"ok": None}]
        assert worker._process is not None
        os.kill(worker._process.pid, signal.SIGKILL)
        worker._process.wait()
        assert worker.run([("compile", CHAT)], budget) == [{"ok": None}]
        assert worker.starts == 2
    finally:
        worker.close()


def test_a_child_that_ends_during_a_job_is_told_from_one_past_its_deadline() -> None:
    """A child that ends mid-job (here a signal from outside) is a crash with its exit status, read once the
    status is there, not a render past its deadline."""
    import threading

    worker = Worker()
    try:
        slow = "{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}"
        budget = Budget(5.0, None)
        assert worker.run([("compile", slow)], budget) == [{"ok": None}]
        assert worker._process is not None
        pid = worker._process.pid
        threading.Timer(0.3, os.kill, (pid, signal.SIGTERM)).start()
        started = time.perf_counter()
        [answer] = worker.run([("render", slow, {"messages": []}, None, None)], budget)
        assert time.perf_counter() - started < 4
        assert answer == {
            "error": "crash",
            "message": f"the render worker ended unexpectedly (exit status {-signal.SIGTERM})",
        }
    finally:
        worker.close()


def test_the_worker_sees_none_of_the_parents_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from templatecheck.worker import _child_environment

    monkeypatch.setenv("TEMPLATECHECK_CANARY", "canary-7f3a9c")
    assert "canary-7f3a9c" not in repr(_child_environment())


def test_a_syntax_error_is_an_error_of_the_template() -> None:
    with pytest.raises(RenderError) as error:
        check_template("{% for %}")
    assert error.value.kind == "syntax" and "does not parse" in error.value.message
    with pytest.raises(RenderError) as error:
        check_template("{{ x | no_such_filter }}")
    assert error.value.kind == "syntax"


@pytest.mark.parametrize(
    "source",
    [
        "{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}",  # the watchdog stops it
        "{{ (10 ** 10000) ** 10000 > 1 }}",  # the parent kills the worker
    ],
)
def test_a_batch_stops_at_its_first_bound(source: str) -> None:
    """A batch holds one template's renders: the first past a bound is the finding, the rest answer at once."""
    start = time.perf_counter()
    calls = [Call([{"role": "user", "content": f"hi {i}"}]) for i in range(6)]
    results = Renderer(limits=Limits(seconds=0.5)).render_many(source, calls)
    assert time.perf_counter() - start < 4
    assert all(isinstance(r, RenderError) and r.kind == "timeout" for r in results)
    assert [r.message.endswith("it is not rendered again)") for r in results] == [False] + [True] * 5  # type: ignore[union-attr]


def test_a_batch_is_read_as_far_as_asked_and_each_answer_arrives_in_order() -> None:
    worker = Worker()
    try:
        assert worker.run([("compile", CHAT)], Budget(5.0, None)) == [{"ok": None}]
        got: list[tuple[int, object]] = []
        ended: list[int] = []
        jobs = [("render", CHAT, {"messages": [{"role": "user", "content": c}]}, None, None) for c in "abc"]
        batch = worker.submit(
            jobs, Budget(5.0, None), lambda b: ended.append(len(b.answers)), lambda i, a: got.append((i, a))
        )
        batch.until(lambda: len(got) >= 2)
        assert got == [(0, {"ok": ["<user>a", []]}), (1, {"ok": ["<user>b", []]})]
        assert not batch.finished and ended == []  # the third answer is still in the pipe
        assert batch.all()[2] == {"ok": ["<user>c", []]}
        assert [i for i, _ in got] == [0, 1, 2] and ended == [3]
        batch.until(lambda: False)  # a finished batch reads nothing more
    finally:
        worker.close()


def test_a_batch_whose_child_dies_is_answered_to_its_end() -> None:
    """The job the child died on gets the bound it died of; those after it the same, without rendering."""
    slow = "{% if messages[0].content == 'slow' %}{% for a in range(100000) %}{% for b in range(1000) %}{% endfor %}{% endfor %}{% endif %}ok"
    worker = Worker()
    try:
        worker.run([("compile", slow)], Budget(30.0, None))
        got: list[int] = []
        jobs = [
            ("render", slow, {"messages": [{"role": "user", "content": c}]}, None, None)
            for c in ("hi", "slow", "hi")
        ]
        batch = worker.submit(jobs, Budget(30.0, None), None, lambda i, a: got.append(i))
        batch.until(lambda: len(got) >= 1)
        assert worker._process is not None
        worker._process.kill()  # while it renders the second job
        answers = batch.all()
        assert got == [0, 1] and batch.finished
        assert answers[0] == {"ok": ["ok", []]}
        assert exceeded(answers[1]) and answers[2]["error"] == answers[1]["error"], answers
        assert str(answers[2]["message"]) == str(answers[1]["message"]) + REPEATED
    finally:
        worker.close()


def test_a_fork_server_keeps_its_child_across_batches() -> None:
    server = ForkServer(lambda x: x * 2)
    try:
        assert server.run([1, 2], Budget(2.0, None)) == [{"ok": 2}, {"ok": 4}]
        first = server._pid
        assert server.run([3], Budget(2.0, None)) == [{"ok": 6}]
        assert server._pid == first and server.starts == 1
        assert server.run(["a", None], Budget(2.0, None)) == [
            {"ok": "aa"},
            {
                "error": "raised",
                "message": "TypeError: unsupported operand type(s) for *: 'NoneType' and 'int'",
            },
        ]
        assert server.starts == 1  # an error of the function is an answer, not the end of the child
    finally:
        server.close()


def test_a_fork_server_sees_none_of_the_parents_environment_or_descriptors(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("TEMPLATECHECK_CANARY", "canary-7f3a9c")
    with open(tmp_path / "secret", "w") as secret:
        server = ForkServer(
            lambda _: (dict(os.environ), os.getcwd(), sorted(map(int, os.listdir("/proc/self/fd"))))
        )
        try:
            [answer] = server.run([None], Budget(2.0, None))
        finally:
            server.close()
        environment, cwd, descriptors = answer["ok"]
        assert environment == {} and cwd == "/"
        assert secret.fileno() not in descriptors
        assert len(descriptors) <= 6  # stdin, stdout, stderr (on /dev/null), its two pipes, the listing's own


def test_a_fork_server_stops_a_batch_at_its_first_bound_and_forks_afresh() -> None:
    def work(x: int) -> int:
        while x < 0:
            pass
        return x

    server = ForkServer(work)
    try:
        start = time.perf_counter()
        answers = server.run([1, -1, 2, 3], Budget(0.5, None))
        assert time.perf_counter() - start < 4
        assert answers[0] == {"ok": 1}
        assert [a["error"] for a in answers[1:]] == ["timeout"] * 3
        assert answers[3]["message"].endswith("it is not rendered again)")
        assert server.run([5], Budget(0.5, None)) == [{"ok": 5}]
        assert server.starts == 2
        assert server._pid is not None
        os.kill(server._pid, signal.SIGKILL)  # a child that died between batches is replaced
        os.waitpid(server._pid, 0)
        assert server.run([6], Budget(0.5, None)) == [{"ok": 6}]
        assert server.starts == 3
    finally:
        server.close()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="pipe buffer sizes are Linux's")
def test_the_workers_request_pipe_holds_a_batch_of_drawn_conversations() -> None:
    import fcntl

    worker = Worker()
    try:
        assert worker.run([("compile", CHAT)], Budget(2.0, None)) == [{"ok": None}]
        assert worker._process is not None and worker._process.stdin is not None
        size = fcntl.fcntl(worker._process.stdin.fileno(), getattr(fcntl, "F_GETPIPE_SZ", 1032))
        with open("/proc/sys/fs/pipe-max-size") as limit:
            if int(limit.read()) < 1 << 20:
                pytest.skip("this system caps pipe buffers below 1 MiB")
        assert size == 1 << 20
    finally:
        worker.close()


def test_a_fork_server_bounds_memory() -> None:
    server = ForkServer(lambda size: len(bytearray(size)))
    try:
        answers = server.run([1 << 10, 1 << 34, 1 << 10], Budget(5.0, 256 * 2**20))
        assert answers[0] == {"ok": 1 << 10}
        assert [a["error"] for a in answers[1:]] == ["memory", "memory"]
        assert answers[1]["message"] == "render exhausted the memory limit of 256 MiB"
        assert server.run([1 << 10], Budget(5.0, 256 * 2**20)) == [{"ok": 1 << 10}]
    finally:
        server.close()
