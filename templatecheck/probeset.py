"""The probe set of the generation layer: short tasks with checkable answers, and the user's probe file.

Every built-in task is one that any instruction-tuned model solves when it is prompted in the format it was
trained on: reply with a given word, add two small numbers, repeat a few words, name a capital, obey a system
instruction, recall an earlier turn, and (when the template renders tools) call a tool. The phrasings are
public so that fixtures can be trained on the same task families.

A probe file holds one JSON object a line (blank lines and lines starting with ``#`` are skipped)::

    {"name": "capital-peru", "messages": [{"role": "user", "content": "What is the capital of Peru?"}],
     "answer": "Lima", "accept": ["Lima, Peru"]}
    {"name": "weather-oslo", "messages": [{"role": "user", "content": "What is the weather in Oslo?"}],
     "tools": [...], "call": {"name": "get_weather", "arguments": {"city": "Oslo"}}}

``name`` is optional, ``max_new_tokens`` optional; an item has either ``answer`` (with optional ``accept``) or
``tools`` and ``call``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from templatecheck import conversation as conv
from templatecheck.errors import TemplatecheckError

# Task phrasings, shared with the training script of the trained fixture.
WORD = 'Reply with the word "{word}" and nothing else.'
ADD = "What is {a} + {b}? Reply with the number only."
REPEAT = 'Repeat exactly: "{text}"'
CAPITAL = "What is the capital of {country}? Reply with the city name only."
SYSTEM_WORD = 'Whatever the user says, reply with the word "{word}".'
REMEMBER = 'Remember this word: "{word}".'
REMEMBERED = "Okay."
RECALL = "Which word did I ask you to remember? Reply with the word only."
WEATHER = "What is the weather in {city}?"

#: Replies that need more room than a word: a tool call is some 20 to 40 tokens in most formats.
TOOL_BUDGET = 64


@dataclass(frozen=True)
class Call:
    """A tool call: the function name and its arguments."""

    name: str
    arguments: dict[str, Any]


@dataclass(frozen=True)
class Probe:
    """One task: a conversation to continue and the reply (or the tool call) that solves it."""

    name: str
    messages: tuple[conv.Message, ...]
    answer: str = ""
    accept: tuple[str, ...] = ()
    tools: tuple[dict[str, Any], ...] = ()
    call: Call | None = None
    max_new_tokens: int | None = None

    @property
    def conversation(self) -> conv.Conversation:
        return [dict(m) for m in self.messages]

    @property
    def prompt(self) -> str:
        """The last user message, as failure messages name the probe."""
        return str(self.messages[-1].get("content", ""))

    def is_correct(self, reply: str) -> bool:
        """Whether ``reply`` (a chat client's text: special tokens removed) is the answer, case and
        surrounding quotes or final punctuation aside."""
        return normalize(reply) in {normalize(a) for a in (self.answer, *self.accept)}


_EDGES = re.compile(r"^[\s\"'`*_]+|[\s\"'`*_.!]+$")


def normalize(text: str) -> str:
    """Lower case, single spaces, no surrounding quotes, emphasis or final full stop."""
    return " ".join(_EDGES.sub("", text).lower().split())


def _user(name: str, text: str, answer: str) -> Probe:
    return Probe(name, (conv.user(text),), answer)


BUILTIN: tuple[Probe, ...] = (
    *(_user(f"word-{w}", WORD.format(word=w), w) for w in ("apple", "green", "music", "coffee", "house")),
    *(
        _user(f"add-{a}+{b}", ADD.format(a=a, b=b), str(a + b))
        for a, b in ((3, 4), (6, 2), (5, 5), (9, 3), (8, 7))
    ),
    *(
        _user(f"repeat-{i}", REPEAT.format(text=t), t)
        for i, t in enumerate(("red blue green", "one two three", "cat dog bird", "tea and bread"), 1)
    ),
    *(
        _user(f"capital-{c.lower()}", CAPITAL.format(country=c), city)
        for c, city in (("France", "Paris"), ("Japan", "Tokyo"), ("Italy", "Rome"), ("Spain", "Madrid"))
    ),
    *(
        Probe(f"system-{w}", (conv.system(SYSTEM_WORD.format(word=w)), conv.user(q)), w)
        for w, q in (
            ("banana", CAPITAL.format(country="Germany")),
            ("yellow", ADD.format(a=2, b=2)),
            ("orange", "Say hello."),
        )
    ),
    *(
        Probe(
            f"recall-{w}",
            (conv.user(REMEMBER.format(word=w)), conv.assistant(REMEMBERED), conv.user(RECALL)),
            w,
        )
        for w in ("tree", "book")
    ),
    Probe(
        "second-turn",
        (conv.user(WORD.format(word="cat")), conv.assistant("cat"), conv.user(WORD.format(word="dog"))),
        "dog",
    ),
)

#: Tool items: offered only when the template renders tool definitions.
BUILTIN_TOOLS: tuple[Probe, ...] = tuple(
    Probe(
        f"tool-{city.lower()}",
        (conv.user(WEATHER.format(city=city)),),
        tools=(conv.WEATHER_TOOL,),
        call=Call("get_weather", {"city": city}),
        max_new_tokens=TOOL_BUDGET,
    )
    for city in ("Paris", "Berlin", "Tokyo", "London")
)


# ------------------------------------------------------------------------------------------------ probe file


def read_probe_file(path: Path) -> tuple[Probe, ...]:
    """The probes of a JSON-lines probe file; errors name the line and the field at fault."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise TemplatecheckError(f"--tc-probe-file {str(path)!r}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise TemplatecheckError(
            f"--tc-probe-file {str(path)!r} cannot be read as UTF-8 text: {exc}"
        ) from None
    probes = []
    for number, line in enumerate(lines, 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        where = f"{path}:{number}"
        try:
            item = json.loads(line)
        except json.JSONDecodeError as exc:
            raise TemplatecheckError(
                f"{where}: not a JSON object ({exc.msg}); write one object a line"
            ) from None
        probes.append(_probe_from(item, where, f"{path.stem}-{number}"))
    if not probes:
        raise TemplatecheckError(
            f"--tc-probe-file {str(path)!r} holds no probes; see the format in the README"
        )
    return tuple(probes)


def _probe_from(item: Any, where: str, default_name: str) -> Probe:
    if not isinstance(item, dict):
        raise TemplatecheckError(f"{where}: expected a JSON object, got {item!r}")
    unknown = set(item) - {"name", "messages", "answer", "accept", "tools", "call", "max_new_tokens"}
    if unknown:
        raise TemplatecheckError(f"{where}: unknown field(s) {', '.join(sorted(unknown))}")
    messages = item.get("messages")
    if not (
        isinstance(messages, list)
        and messages
        and all(isinstance(m, dict) and isinstance(m.get("role"), str) for m in messages)
    ):
        raise TemplatecheckError(
            f'{where}: "messages" must be a non-empty list of {{"role": ..., "content": ...}} objects'
        )
    budget = item.get("max_new_tokens")
    if budget is not None and not (isinstance(budget, int) and budget > 0):
        raise TemplatecheckError(f'{where}: "max_new_tokens" must be a positive integer, got {budget!r}')
    name = str(item.get("name", default_name))
    if "call" in item:
        tools, call = _tools(item, where), _call(item["call"], where)
        return Probe(name, tuple(messages), tools=tools, call=call, max_new_tokens=budget or TOOL_BUDGET)
    answer, accept = item.get("answer"), item.get("accept", [])
    if not isinstance(answer, str) or not answer.strip():
        raise TemplatecheckError(f'{where}: needs "answer" (a non-empty string) or "tools" and "call"')
    if not (isinstance(accept, list) and all(isinstance(a, str) for a in accept)):
        raise TemplatecheckError(f'{where}: "accept" must be a list of strings, got {accept!r}')
    return Probe(name, tuple(messages), answer, tuple(accept), max_new_tokens=budget)


def _tools(item: dict[str, Any], where: str) -> tuple[dict[str, Any], ...]:
    tools = item.get("tools")
    if not (isinstance(tools, list) and tools and all(isinstance(t, dict) for t in tools)):
        raise TemplatecheckError(f'{where}: a "call" item needs "tools", a non-empty list of JSON schemas')
    return tuple(tools)


def _call(call: Any, where: str) -> Call:
    if not (isinstance(call, dict) and isinstance(call.get("name"), str)):
        raise TemplatecheckError(
            f'{where}: "call" must be {{"name": ..., "arguments": {{...}}}}, got {call!r}'
        )
    arguments = call.get("arguments", {})
    if not isinstance(arguments, dict):
        raise TemplatecheckError(f'{where}: "call.arguments" must be an object, got {arguments!r}')
    return Call(call["name"], arguments)
