"""The renderer: transformers' environment, the pinned clock, generation spans and the bounds."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from templatecheck.render import PINNED_CLOCK, Call, Limits, Rendered, Renderer, RenderError, compile_template
from templatecheck.worker import REPEATED

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
HI = [{"role": "user", "content": "hi"}]


def render(source: str, messages: list[dict[str, object]] | None = None, **kwargs: object) -> str:
    return Renderer(special_tokens={"bos_token": "<s>"}).render(source, messages or HI, **kwargs).text


def test_renders_messages_and_generation_prompt() -> None:
    assert render(CHATML) == "<|im_start|>user\nhi<|im_end|>\n"
    assert render(CHATML, add_generation_prompt=True).endswith("<|im_start|>assistant\n")


def test_trim_and_lstrip_blocks_as_transformers() -> None:
    source = "{% for m in messages %}\n    {{ m.content }}\n{% endfor %}"
    assert (
        render(source) == "    hi\n"
    )  # trim_blocks eats the newline after a tag, lstrip_blocks the indent before


def test_special_tokens_and_variables_reach_the_template() -> None:
    assert render("{{ bos_token }}{{ custom }}", custom="!") == "<s>!"


def test_none_values_are_dropped_like_transformers() -> None:
    source = "{% for m in messages %}{{ 'content' in m }}{% endfor %}"
    assert render(source, [{"role": "assistant", "content": None}]) == "False"


def test_reasoning_fields_are_aliased() -> None:
    source = "{{ messages[0].reasoning_content }}|{{ messages[0].thinking }}"
    assert render(source, [{"role": "assistant", "content": "a", "reasoning": "r"}]) == "r|r"


def test_tojson_keeps_unicode_and_takes_options() -> None:
    assert render("{{ {'a': 'é<'} | tojson }}") == '{"a": "é<"}'
    assert render("{{ {'b': 1, 'a': 2} | tojson(sort_keys=true) }}") == '{"a": 2, "b": 1}'


def test_strftime_now_uses_the_pinned_clock_unless_told() -> None:
    assert render("{{ strftime_now('%d %b %Y') }}") == PINNED_CLOCK.strftime("%d %b %Y")
    later = Renderer(clock=datetime(2030, 5, 6)).render("{{ strftime_now('%Y') }}", HI).text
    assert later == "2030"


def test_generation_spans_cover_generation_blocks() -> None:
    source = (
        "{% for m in messages %}{% if m.role == 'assistant' %}A:{% generation %}{{ m.content }}!"
        "{% endgeneration %}{% else %}U:{{ m.content }}{% endif %}{% endfor %}"
    )
    messages = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "ans"}]
    rendered = Renderer().render(source, messages)
    assert rendered.text == "U:qA:ans!"
    assert [rendered.text[a:b] for a, b in rendered.generation_spans] == ["ans!"]


def test_continue_final_message_leaves_the_last_turn_open() -> None:
    messages = [*HI, {"role": "assistant", "content": "The answer is"}]
    assert render(CHATML, messages, continue_final_message=True).endswith("assistant\nThe answer is")


def test_raise_exception_is_a_refusal() -> None:
    with pytest.raises(RenderError) as info:
        render("{{ raise_exception('System role not supported') }}")
    assert info.value.kind == "refused"
    assert str(info.value) == "template refused: System role not supported"


def test_a_template_error_is_reported_with_its_type() -> None:
    with pytest.raises(RenderError) as info:
        render("{{ messages[0].content.nope() }}")
    assert info.value.kind == "raised"
    assert "UndefinedError" in str(info.value)


NAMES_SOURCES = [
    "{% set x = 1 + 2 %}{{ bos_token ~ x }}{% for m in messages %}{{ m.content | trim }}{% endfor %}",
    "{% macro show(m, sep='') %}{{ sep }}{{ m.role }}{{ eos_token }}{% endmacro %}{% for m in messages %}"
    "{{ show(m) }}{% set ns = namespace(n=loop.index) %}{% endfor %}{{ ns.n if ns is defined else tools }}",
    "{% if enable_thinking is not defined %}{% set enable_thinking = true %}{% endif %}{{ enable_thinking }}"
    "{% set shown %}{{ date_string | default(strftime_now('%d')) }}{% endset %}{{ shown }}",
]


@pytest.mark.parametrize("source", NAMES_SOURCES)
def test_the_names_a_template_reads_are_noted_as_it_compiles(source: str) -> None:
    """The names the compile notes are those ``jinja2.meta`` finds on a fresh parse, and found again once the
    compiled template is gone."""
    import jinja2.meta

    from templatecheck import render as module

    fresh = jinja2.meta.find_undeclared_variables(module._ENV.parse(source))
    assert module.undeclared_variables(source) == fresh
    module._COMPILED.pop(source)
    assert module.undeclared_variables(source) == fresh
    assert "bos_token" in module.undeclared_variables(NAMES_SOURCES[0])
    assert "x" not in module.undeclared_variables(NAMES_SOURCES[0])


# ------------------------------------------------------------------------------ compiled templates kept


@pytest.fixture
def kept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """A cache folder of this test's own, and the verbs this process asks the render worker for a compile
    (``compiled``: it compiles; ``install``: it loads the code kept)."""
    from templatecheck import render as module

    monkeypatch.setenv("TEMPLATECHECK_CACHE_DIR", str(tmp_path))
    asked: list[str] = []
    ask = module._ask
    monkeypatch.setattr(module, "_ask", lambda job, limits: asked.append(job[0]) or ask(job, limits))
    module._compile_facts.cache_clear()
    yield asked
    module._compile_facts.cache_clear()


def _code(entry: bytes) -> bytes:
    """The code of a kept entry (after its magic line and its header line)."""
    return entry.split(b"\n", 2)[2]


def _next_run(asked: list[str]) -> None:
    """What a later run starts with: no compile facts in this process, a fresh render worker."""
    from templatecheck import render as module
    from templatecheck.worker import shared

    module._compile_facts.cache_clear()
    shared().close()
    asked.clear()


def test_a_compiled_template_is_kept_and_the_next_run_loads_it(kept: list[str], tmp_path: Path) -> None:
    from templatecheck.render import template_variables

    source = CHATML + "{# kept #}{{ bos_token }}"
    names = template_variables(source)
    assert kept == ["compiled"] and {"messages", "bos_token", "add_generation_prompt"} <= names
    (entry,) = (tmp_path / "compiled").glob("*.bin")
    assert entry.stat().st_mode & 0o077 == 0  # this user's only, as the folder
    assert (tmp_path / "compiled").stat().st_mode & 0o077 == 0
    _next_run(kept)
    assert template_variables(source) == names
    assert kept == ["install"]  # the worker loaded the code: nothing compiled
    assert render(source) == "<|im_start|>user\nhi<|im_end|>\n<s>"


def test_the_kept_code_is_what_renders(kept: list[str], tmp_path: Path) -> None:
    """The code kept under a template's key is what the worker renders for it (why the folder must be this
    user's own): here another template's code, put in its place."""
    from templatecheck import render as module

    first, other = CHATML + "{# first #}", "{{ 'other code' }}"
    module.template_variables(first)
    module.template_variables(other)
    entries = {p.name: p.read_bytes() for p in (tmp_path / "compiled").glob("*.bin")}
    first_path, other_path = module._kept_path(first), module._kept_path(other)
    assert first_path is not None and other_path is not None and len(entries) == 2
    first_path.write_bytes(entries[other_path.name])
    _next_run(kept)
    module.template_variables(first)
    assert kept == ["install"]
    assert render(first) == "other code"


def test_a_damaged_kept_template_is_compiled_again_and_replaced(kept: list[str], tmp_path: Path) -> None:
    from templatecheck import render as module

    source = CHATML + "{# damaged #}"
    names = module.template_variables(source)
    (entry,) = (tmp_path / "compiled").glob("*.bin")
    good = entry.read_bytes()
    for damaged in (module._KEPT_MAGIC + b'["messages"]\nnot code', b"something else", good[:-40]):
        entry.write_bytes(damaged)
        _next_run(kept)
        assert module.template_variables(source) == names
        assert kept in (["install", "compiled"], ["compiled"])  # loading refused, or not tried
        assert _code(entry.read_bytes()) == _code(good)  # replaced by a sound entry
        assert render(source) == "<|im_start|>user\nhi<|im_end|>\n"


def test_kept_code_that_is_not_the_code_it_names_is_compiled_again(kept: list[str], tmp_path: Path) -> None:
    """A byte changed in the kept code (it still unmarshals: a constant, an opcode) is seen by its hash."""
    from templatecheck import render as module

    source = CHATML + "{# one byte #}"
    module.template_variables(source)
    (entry,) = (tmp_path / "compiled").glob("*.bin")
    good = entry.read_bytes()
    at = good.index(b"im_start")
    entry.write_bytes(good[:at] + b"Im_start" + good[at + 8 :])
    _next_run(kept)
    module.template_variables(source)
    assert kept == ["compiled"]
    assert _code(entry.read_bytes()) == _code(good)  # replaced by a sound entry
    assert render(source) == "<|im_start|>user\nhi<|im_end|>\n"


def test_kept_code_whose_compile_took_longer_than_a_render_may_is_compiled_under_the_bound(
    kept: list[str], tmp_path: Path
) -> None:
    import json

    from templatecheck import render as module

    source = CHATML + "{# slow compile #}"
    module.template_variables(source)
    (entry,) = (tmp_path / "compiled").glob("*.bin")
    data = entry.read_bytes()
    header, _, code = data[len(module._KEPT_MAGIC) :].partition(b"\n")
    found = json.loads(header)
    assert 0 < found["seconds"] < 2
    found["seconds"] = 3.0  # as if it took 3 s then
    entry.write_bytes(module._KEPT_MAGIC + json.dumps(found).encode() + b"\n" + code)
    _next_run(kept)
    module.template_variables(source, Limits(seconds=2.0))
    assert kept == ["compiled"]  # not loaded: compiled again, under this run's bound
    _next_run(kept)
    module.template_variables(source, Limits(seconds=5.0))
    assert kept == ["install"]


def test_the_key_of_kept_code_follows_jinjas_installed_compiler(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Jinja whose compiler differs (a build that keeps its version number) gives other keys; one whose code
    cannot be read keeps nothing."""
    import shutil

    import jinja2

    from templatecheck import render as module

    monkeypatch.setenv("TEMPLATECHECK_CACHE_DIR", str(tmp_path))
    module._code_generation.cache_clear()
    try:
        before = module._kept_path(CHATML)
        copy = tmp_path / "jinja2"
        shutil.copytree(Path(jinja2.__file__).parent, copy)
        with (copy / "compiler.py").open("a") as compiler:
            compiler.write("\n# another build\n")
        monkeypatch.setattr(jinja2, "__file__", str(copy / "__init__.py"))
        module._code_generation.cache_clear()
        assert module._kept_path(CHATML) not in (None, before)
        (copy / "runtime.py").unlink()
        module._code_generation.cache_clear()
        assert module._kept_path(CHATML) is None
    finally:
        monkeypatch.undo()
        module._code_generation.cache_clear()


def test_a_cache_folder_others_can_write_to_is_not_used(kept: list[str], tmp_path: Path) -> None:
    from templatecheck import render as module

    source = CHATML + "{# shared folder #}"
    folder = tmp_path / "compiled"
    folder.mkdir(mode=0o700)
    folder.chmod(0o777)
    module.template_variables(source)
    assert not any(folder.iterdir())  # nothing written there
    folder.chmod(0o700)
    module._compile_facts.cache_clear()
    module.template_variables(source)
    (entry,) = folder.glob("*.bin")
    folder.chmod(0o777)
    _next_run(kept)
    module.template_variables(source)
    assert kept == ["compiled"]  # nor read from there
    folder.chmod(0o700)
    entry.chmod(0o666)
    _next_run(kept)
    module.template_variables(source)
    assert kept == ["compiled"]  # nor a file others can write to


def test_nothing_is_kept_when_the_cache_is_off_or_the_template_does_not_compile(
    kept: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from templatecheck import render as module

    with pytest.raises(RenderError, match="does not parse"):
        module.check_template("{% if %}")
    assert not (tmp_path / "compiled").exists() or not any((tmp_path / "compiled").iterdir())
    monkeypatch.setenv("TEMPLATECHECK_CACHE_DIR", "off")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "home"))
    module.template_variables(CHATML + "{# off #}")
    assert kept == ["compiled", "compiled"]
    assert not (tmp_path / "home").exists()


def test_a_syntax_error_names_the_line() -> None:
    with pytest.raises(RenderError) as info:
        compile_template("line one\n{% if %}")
    assert info.value.kind == "syntax"
    assert "line 2" in str(info.value)


def test_sandbox_refuses_attribute_escapes() -> None:
    with pytest.raises(RenderError) as info:
        render("{{ messages.__class__.__mro__ }}")
    assert info.value.kind in ("security", "raised")
    with pytest.raises(RenderError) as info:
        render("{% set ns = namespace() %}{% set ns._x = 1 %}")
    assert info.value.kind == "security"


def test_the_sandbox_judges_an_attribute_by_the_type_that_has_it() -> None:
    """The sandbox's rule is kept per (type, name): a name safe on one type stays unsafe on another."""
    assert render("{% set ns = namespace(update='u') %}{{ ns.update }}") == "u"
    with pytest.raises(RenderError) as info:
        render("{% set ns = namespace(update='u') %}{{ ns.update }}{% set d = {} %}{{ d.update({'a': 1}) }}")
    assert info.value.kind == "security"
    assert "update" in str(info.value)
    assert render("{{ messages[0].content.upper() }}") == render("{{ messages[0].content | upper }}")


ATTRIBUTE_READS = [
    "{{ messages[0].role }}|{{ messages[0].missing is defined }}|{{ messages[0].items is defined }}",
    "{% set d = {'items': 1, 'get': 2, 'x': 3} %}{{ d.x }}|{{ d['items'] }}|{{ d.get('x') }}|{{ d.items() | list }}",
    "{% set d = {'__class__': 1} %}{{ d.__class__ is defined }}|{{ d['__class__'] }}",
    "{% set ns = namespace(a=1, f='{}'.format) %}{{ ns.a }}|{{ ns.b is defined }}|{{ ns.f('x') }}",
    "{% set ns = namespace(a=1) %}{{ ns.__class__ is defined }}|{{ ns._Namespace__attrs is defined }}",
    "{% for m in messages %}{{ loop.index }}{{ loop.first }}{{ loop.last }}{{ loop.nope is defined }}"
    "{{ loop.cycle('a', 'b') }}{{ loop.__class__ is defined }}{% endfor %}",
]


@pytest.mark.parametrize("source", ATTRIBUTE_READS)
def test_attribute_reads_follow_jinjas_sandbox(source: str) -> None:
    """The renderer's quick paths for dict keys, namespaces and loops read what Jinja's own sandbox reads."""
    import jinja2.sandbox

    stock = jinja2.sandbox.ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]
    assert render(source, messages) == stock.from_string(source).render(messages=messages)


def test_an_endless_loop_is_stopped_at_the_time_bound() -> None:
    source = "{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}"
    start = time.perf_counter()
    with pytest.raises(RenderError) as info:
        Renderer(limits=Limits(seconds=0.3)).render(source, HI)
    assert info.value.kind == "timeout"
    assert str(info.value) == "render exceeded 0.3 s"
    assert time.perf_counter() - start < 2


def test_output_past_the_bound_is_stopped() -> None:
    source = "{% for a in range(100000) %}{{ 'xxxxxxxxxx' }}{% endfor %}"
    with pytest.raises(RenderError) as info:
        Renderer(limits=Limits(max_output_chars=100_000)).render(source, HI)
    assert info.value.kind == "output"
    assert "output exceeded 0.1 MB" in str(info.value)


def test_huge_repetition_is_refused_before_it_allocates() -> None:
    with pytest.raises(RenderError) as info:
        render("{{ 'x' * 100000000000 }}")
    assert info.value.kind == "output"


def test_namespace_strings_cannot_outgrow_the_bound() -> None:
    source = (
        "{% set ns = namespace(s='xx') %}{% for i in range(60) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}"
    )
    with pytest.raises(RenderError) as info:
        Renderer(limits=Limits(max_output_chars=1_000_000)).render(source, HI)
    assert info.value.kind == "output"


def test_bounds_leave_no_pending_interrupt_behind() -> None:
    fast = Renderer(limits=Limits(seconds=0.05))
    for _ in range(200):
        fast.render(CHATML, HI)
    time.sleep(0.1)  # any interrupt armed by the renders above would land here
    assert render(CHATML) == "<|im_start|>user\nhi<|im_end|>\n"


# ------------------------------------------------------------------------------------------------ the memo


def _jobs_sent(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The size of every batch the render worker gets from now on."""
    from templatecheck import worker

    sent: list[int] = []
    real = worker.Worker.submit

    def submit(self: worker.Worker, jobs: Any, budget: Any, *args: Any) -> Any:
        sent.append(len(jobs))
        return real(self, jobs, budget, *args)

    monkeypatch.setattr(worker.Worker, "submit", submit)
    return sent


MEMO_CHAT = "{% for m in messages %}<{{ m.role }}>{{ m.content }}{% endfor %}"


def test_an_equal_render_is_answered_from_the_first(monkeypatch: pytest.MonkeyPatch) -> None:
    renderer = Renderer()
    sent = _jobs_sent(monkeypatch)
    first = renderer.render(MEMO_CHAT, [{"role": "user", "content": "hi"}])
    again = renderer.render(MEMO_CHAT, [{"role": "user", "content": "hi"}])
    assert first == again and first is not again
    first.text = "changed by a caller"
    assert renderer.render(MEMO_CHAT, [{"role": "user", "content": "hi"}]).text == "<user>hi"
    batch = renderer.render_many(
        MEMO_CHAT, [Call([{"role": "user", "content": t}]) for t in ("a", "b", "a", "hi")]
    )
    assert [r.text for r in batch if isinstance(r, Rendered)] == ["<user>a", "<user>b", "<user>a", "<user>hi"]
    assert sent == [1, 2]  # "hi" once; in the batch "a" once, "b" once, "hi" not at all
    other = renderer.with_clock(datetime(2030, 1, 1))
    other.render(MEMO_CHAT, [{"role": "user", "content": "hi"}])
    assert sent == [1, 2, 1]  # another clock is another render


def test_fresh_and_live_clock_renders_are_always_made(monkeypatch: pytest.MonkeyPatch) -> None:
    sent = _jobs_sent(monkeypatch)
    renderer = Renderer()
    call = Call([{"role": "user", "content": "hi"}])
    renderer.render_many(MEMO_CHAT, [call])
    renderer.render_many(MEMO_CHAT, [call, call, call], fresh=True)
    live = Renderer(clock=None)
    live.render_many(MEMO_CHAT, [call])
    live.render_many(MEMO_CHAT, [call])
    assert sent == [1, 3, 1, 1]


def test_template_errors_are_kept_and_bounds_are_not(monkeypatch: pytest.MonkeyPatch) -> None:
    sent = _jobs_sent(monkeypatch)
    renderer = Renderer()
    raising = "{{ raise_exception('no system role') }}"
    for _ in range(2):
        with pytest.raises(RenderError, match="no system role") as caught:
            renderer.render(raising, [{"role": "user", "content": "hi"}])
        assert caught.value.kind == "refused"
    assert sent == [1]
    memo = Renderer().memo
    key = memo.key(raising, None, None, call=Call([]))
    assert key is not None
    memo.put(key, RenderError("timeout", "render exceeded 2 s"))
    assert memo.get(key) is None


#: A render that takes a while (tens of milliseconds) where the content starts with "slow", none otherwise.
SLOW_CHAT = (
    "{% for m in messages %}{% if m.content.startswith('slow') %}{% for i in range(400) %}{% for j in range(1000) %}"
    "{% endfor %}{% endfor %}{% endif %}<{{ m.role }}>{{ m.content }}{% endfor %}"
)


def test_a_prefetch_returns_before_the_worker_renders_and_is_read_when_asked(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    renderer = Renderer()
    renderer.render(SLOW_CHAT, HI)  # the worker is up and the template compiled
    sent = _jobs_sent(monkeypatch)
    contents = ["slow 1", "slow 2", "slow 3", "slow 1", "last"]
    started = time.perf_counter()
    renderer.prefetch(SLOW_CHAT, [Call([{"role": "user", "content": c}]) for c in contents])
    returned = time.perf_counter() - started
    assert len(renderer.memo.inflight) == 4  # sent, not read
    assert renderer.render(SLOW_CHAT, [{"role": "user", "content": "slow 1"}]).text == "<user>slow 1"
    waited = time.perf_counter() - started
    assert len(renderer.memo.inflight) == 3  # read as far as the render asked for, the rest still in flight
    assert renderer.render(SLOW_CHAT, [{"role": "user", "content": "last"}]).text == "<user>last"
    assert renderer.memo.inflight == {}  # read up to the last, and the renders before it with it
    assert renderer.render(SLOW_CHAT, [{"role": "user", "content": "slow 2"}]).text == "<user>slow 2"
    assert sent == [4]  # equal calls once; nothing rendered again when asked for
    assert returned < waited / 3, (returned, waited)


def test_a_prefetch_asked_for_again_while_in_flight_is_not_sent_twice(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sent = _jobs_sent(monkeypatch)
    renderer = Renderer()
    calls = [Call([{"role": "user", "content": c}]) for c in ("a", "b")]
    renderer.prefetch(MEMO_CHAT, calls)
    renderer.prefetch(MEMO_CHAT, calls)  # both in flight: nothing to send, nothing read
    assert len(renderer.memo.inflight) == 2
    assert [r.text for r in renderer.render_many(MEMO_CHAT, calls)] == ["<user>a", "<user>b"]  # type: ignore[union-attr]
    assert sent == [2]


def test_a_render_sent_while_a_batch_is_in_flight_reads_that_batch_first(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sent = _jobs_sent(monkeypatch)
    renderer = Renderer()
    renderer.prefetch(MEMO_CHAT, [Call([{"role": "user", "content": "a"}])])
    assert renderer.render(MEMO_CHAT, [{"role": "user", "content": "b"}]).text == "<user>b"
    assert renderer.memo.inflight == {}  # the batch of "a" was read before "b" was sent, and kept
    assert renderer.render(MEMO_CHAT, [{"role": "user", "content": "a"}]).text == "<user>a"
    assert sent == [1, 1]


def test_a_bound_exceeded_in_a_prefetched_batch_holds_for_the_renders_after(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    source = (
        "{% if messages[0].content == 'loop' %}{% for a in range(100000) %}{% for b in range(100000) %}"
        "{% endfor %}{% endfor %}{% endif %}ok"
    )
    renderer = Renderer(limits=Limits(seconds=0.5))
    renderer.render(source, HI)
    sent = _jobs_sent(monkeypatch)
    renderer.prefetch(source, [Call([{"role": "user", "content": c}]) for c in ("loop", "after")])
    with pytest.raises(RenderError) as other:  # not in the batch: its bound is learnt before this is sent
        renderer.render(source, [{"role": "user", "content": "new"}])
    assert other.value.kind == "timeout"
    with pytest.raises(RenderError) as looped:
        renderer.render(source, [{"role": "user", "content": "after"}])
    assert looped.value.kind == "timeout"
    assert looped.value.message.endswith(REPEATED)
    assert sent == [2]  # the template is not rendered again once it exceeded its bound


LOOPS_ON_LOOP = (
    "{% if messages[0].content == 'loop' %}{% for a in range(100000) %}{% for b in range(100000) %}"
    "{% endfor %}{% endfor %}{% endif %}ok:{{ messages[0].content }}"
)


@pytest.mark.parametrize(
    "order", [("first", "loop", "after"), ("after", "loop", "first"), ("loop", "first", "after")]
)
def test_a_prefetched_batch_answers_as_render_many_would_in_any_order(order: tuple[str, ...]) -> None:
    """What a render sent ahead gives does not depend on when, or how far, its batch was read: a render made
    before the bound was exceeded keeps its text, the one that exceeded it keeps the bound it exceeded, and
    those after answer with that bound as not rendered again, as after render_many."""
    calls = [Call([{"role": "user", "content": c}]) for c in ("first", "loop", "after")]
    direct = Renderer(limits=Limits(seconds=0.5))
    direct.render_many(LOOPS_ON_LOOP, calls)
    ahead = Renderer(limits=Limits(seconds=0.5))
    ahead.prefetch(LOOPS_ON_LOOP, calls)
    for content in order:
        for renderer in (direct, ahead):
            if content == "first":
                assert (
                    renderer.render(LOOPS_ON_LOOP, [{"role": "user", "content": content}]).text == "ok:first"
                )
                continue
            with pytest.raises(RenderError) as caught:
                renderer.render(LOOPS_ON_LOOP, [{"role": "user", "content": content}])
            assert caught.value.kind == "timeout"
            if content == "loop":
                assert caught.value.message == "render exceeded 0.5 s"
            else:
                assert caught.value.message == "render exceeded 0.5 s" + REPEATED


def test_what_a_render_gives_does_not_depend_on_how_far_its_batch_was_read_when_the_memo_is_full() -> None:
    """Reading on to a render that exceeds a bound pushes no earlier render of the batch out of a full memo:
    that render keeps its text whichever is asked for first."""
    long_a, long_b = "a" * 3000, "b" * 3000
    given = {}
    for order in (("a", "loop"), ("loop", "a")):
        renderer = Renderer(limits=Limits(seconds=0.5))
        renderer.memo.max_chars = 5000
        contents = {"a": long_a, "b": long_b, "loop": "loop"}
        renderer.prefetch(
            LOOPS_ON_LOOP, [Call([{"role": "user", "content": contents[c]}]) for c in ("a", "b", "loop")]
        )
        for name in order:
            result = renderer.render_many(
                LOOPS_ON_LOOP, [Call([{"role": "user", "content": contents[name]}])]
            )[0]
            given[order, name] = result.text[:8] if isinstance(result, Rendered) else result.kind
    assert given[("a", "loop"), "a"] == given[("loop", "a"), "a"] == "ok:aaaaa"
    assert given[("a", "loop"), "loop"] == given[("loop", "a"), "loop"] == "timeout"


def test_a_prefetched_batch_is_charged_the_workers_time_not_this_processs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The time budget of a template counts what its renders took in the worker, not what this process did
    while they were on their way."""
    renderer = Renderer(limits=Limits(budget_seconds=0.5))
    renderer.prefetch(MEMO_CHAT, [Call([{"role": "user", "content": c}]) for c in ("a", "b")])
    time.sleep(0.8)
    assert renderer.render(MEMO_CHAT, [{"role": "user", "content": "a"}]).text == "<user>a"
    assert renderer.render(MEMO_CHAT, [{"role": "user", "content": "c"}]).text == "<user>c"
    assert renderer.ledger.spent[MEMO_CHAT] < 0.2


def test_a_prefetched_call_that_cannot_be_kept_leaves_nothing_in_flight() -> None:
    import threading

    renderer = Renderer()
    renderer.prefetch(
        MEMO_CHAT, [Call([{"role": "user", "content": "a"}], variables={"lock": threading.Lock()})]
    )
    assert renderer.memo.inflight == {}


def test_closing_the_worker_first_reads_the_batch_in_flight(monkeypatch: pytest.MonkeyPatch) -> None:
    from templatecheck.worker import shared

    sent = _jobs_sent(monkeypatch)
    renderer = Renderer()
    renderer.prefetch(MEMO_CHAT, [Call([{"role": "user", "content": "kept"}])])
    shared().close()
    assert renderer.render(MEMO_CHAT, [{"role": "user", "content": "kept"}]).text == "<user>kept"
    assert sent == [1]


def test_the_memo_is_bounded_by_the_characters_it_keeps() -> None:
    renderer = Renderer()
    renderer.memo.max_chars = 2_000
    for i in range(50):
        renderer.render(MEMO_CHAT, [{"role": "user", "content": f"{i:04d}" * 50}])
    one = renderer.memo.chars / len(renderer.memo.entries)
    assert 0 < renderer.memo.chars <= 2_000 + one  # trimmed before each batch is sent: one batch above
    assert len(renderer.memo.entries) < 50
