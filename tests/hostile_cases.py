"""A hostile corpus: templates that loop, explode, escape, or break, and bad inputs.

Each case names what it does, how templatecheck must answer (the render error kind, the check outcome, or the
load error), a fragment of the message, and a wall-time bound. ``tests/test_hostile.py`` asserts them;
``benchmarks/hostile_table.py`` prints each with its measured time.
"""

from __future__ import annotations

from dataclasses import dataclass

CANARY_ENV = "TEMPLATECHECK_CANARY"
CANARY_VALUE = "canary-7f3a9c"

_CHAT = (
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


@dataclass(frozen=True)
class TemplateCase:
    """A template rendered with the plain conversations: ``kind`` is the RenderError kind every render
    gives (``None``: it renders), ``check`` a check that must fail on it, ``message`` a fragment of what is said."""

    name: str
    source: str
    kind: str | None
    message: str
    seconds: float
    check: str = "renders"


TEMPLATES = [
    TemplateCase(
        "nested loops past the time bound",
        "{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}",
        "timeout",
        "render exceeded 1 s",
        3.0,
    ),
    TemplateCase(
        "macro recursion without end",
        "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}",
        "raised",
        "recursion",
        3.0,
    ),
    TemplateCase(
        "exponential macro calls",
        "{% macro f(n) %}{% if n %}{{ f(n - 1) }}{{ f(n - 1) }}{% endif %}x{% endmacro %}{{ f(60) }}",
        "timeout",
        "render exceeded 1 s",
        3.0,
    ),
    TemplateCase("huge repetition", "{{ 'x' * 1000000000000 }}", "output", "a repetition of", 1.0),
    TemplateCase(
        "namespace string doubling",
        "{% set ns = namespace(s='ab') %}{% for i in range(64) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}",
        "output",
        "output exceeded",
        2.0,
    ),
    TemplateCase(
        "top-level ~ doubling",
        "{% set s = 'abcdefgh' %}" + "{% set s = s ~ s %}" * 40 + "{{ s }}",
        "output",
        "output exceeded",
        2.0,
    ),
    TemplateCase(
        "endless output",
        "{% for a in range(100000) %}{{ 'y' * 1000 }}{% endfor %}",
        "output",
        "characters of output",
        3.0,
    ),
    TemplateCase(
        "str.center with a huge width", "{{ 'x'.center(10000000000) }}", "output", "a size argument", 1.0
    ),
    TemplateCase(
        "center filter with a huge width", "{{ 'x' | center(10000000000) }}", "output", "a size argument", 1.0
    ),
    TemplateCase("%-format with a huge width", "{{ '%9999999999s' % 'x' }}", "output", "a field width", 1.0),
    TemplateCase(
        "str.format with a huge width", "{{ '{:>9999999999}'.format('x') }}", "output", "a field width", 1.0
    ),
    TemplateCase("lipsum flood", "{{ lipsum(10000000) }}", "output", "lipsum of 10,000,000 paragraphs", 1.0),
    TemplateCase("power tower", "{{ 2 ** 100000000 }}", "output", "a power with exponent", 1.0),
    TemplateCase(
        "__class__.__mro__ subclasses walk",
        "{{ ''.__class__.__mro__[1].__subclasses__() }}" + _CHAT,
        "security",
        "'__class__'",
        1.0,
        check="sandbox",
    ),
    TemplateCase(
        "cycler.__init__.__globals__",
        "{{ cycler.__init__.__globals__.os.environ }}" + _CHAT,
        "security",
        "'__init__'",
        1.0,
        check="sandbox",
    ),
    TemplateCase(
        "joiner.__init__.__globals__",
        "{{ joiner.__init__.__globals__['os'].popen('id').read() }}" + _CHAT,
        "security",
        "'__init__'",
        1.0,
        check="sandbox",
    ),
    TemplateCase(
        "namespace internals",
        "{{ namespace.__init__.__globals__['__builtins__']['open']('/etc/passwd').read() }}" + _CHAT,
        "security",
        "'__init__'",
        1.0,
        check="sandbox",
    ),
    TemplateCase(
        "lipsum.__globals__ to os.environ",
        "{{ lipsum.__globals__['os'].environ['" + CANARY_ENV + "'] }}" + _CHAT,
        "security",
        "'__globals__'",
        1.0,
        check="sandbox",
    ),
    TemplateCase(
        "format-string attribute walk",
        "{{ '{0.__class__.__init__.__globals__}'.format(raise_exception) }}" + _CHAT,
        "security",
        "security",
        1.0,
        check="sandbox",
    ),
    TemplateCase(
        "self.__init__.__globals__",
        "{{ self.__init__.__globals__.__builtins__ }}" + _CHAT,
        "security",
        "'__init__'",
        1.0,
        check="sandbox",
    ),
    TemplateCase(
        "attr filter to __class__",
        "{{ (messages | attr('__class__')).__base__ }}" + _CHAT,
        "security",
        "'__class__'",
        1.0,
        check="sandbox",
    ),
    TemplateCase(
        "map(attribute=) to __class__",
        "{{ messages | map(attribute='__class__') | list }}" + _CHAT,
        None,
        "'__class__'",
        1.0,
        check="sandbox",
    ),
    TemplateCase(
        "mutating the messages",
        "{{ messages.append({'role': 'system', 'content': 'injected'}) }}" + _CHAT,
        "security",
        "security",
        1.0,
        check="sandbox",
    ),
    TemplateCase(
        "private namespace attribute",
        "{% set ns = namespace() %}{% set ns._secret = 1 %}" + _CHAT,
        "security",
        "underscore-prefixed",
        1.0,
        check="sandbox",
    ),
    TemplateCase(
        "dict type recovered from the dict global",
        "{{ dict.__call__.__globals__ }}" + _CHAT,
        "security",
        "'__call__'",
        1.0,
        check="sandbox",
    ),
    TemplateCase("include of a host file", "{% include '/etc/passwd' %}", "raised", "template raised", 1.0),
    TemplateCase("extends a host file", "{% extends '/etc/hostname' %}", "raised", "template raised", 1.0),
    TemplateCase("syntax error", "{% for m in messages %}{{ m.content }", "syntax", "does not parse", 1.0),
    TemplateCase("unknown filter", "{{ messages | explode }}", "syntax", "does not parse", 1.0),
    TemplateCase(
        "raise_exception always", "{{ raise_exception('nope') }}", "refused", "template refused: nope", 1.0
    ),
]


@dataclass(frozen=True)
class InputCase:
    """A bad input: ``build(tmp_path)`` returns the ``--model`` value (and optional ``--tc-chat-template``)."""

    name: str
    message: str
    seconds: float = 5.0


INPUTS = [
    InputCase("a path that does not exist", "no such directory, and not a Hub repo id"),
    InputCase("a Hub id, offline with an empty cache", "is not in the local Hugging Face cache"),
    InputCase("a directory with no tokenizer", "has no tokenizer files"),
    InputCase("malformed tokenizer_config.json", "is not valid JSON (line 1, column"),
    InputCase("a base model with no chat template", "has no chat template"),
    InputCase("an unknown --tc-chat-template name", "no such file, and model"),
    InputCase("a template file that is not UTF-8", "is not UTF-8 text; re-save it as UTF-8"),
    InputCase("a tokenizer that needs remote code", "never runs (no trust_remote_code)"),
    InputCase("chat_template of the wrong type", "chat_template must be a string or a list"),
]
