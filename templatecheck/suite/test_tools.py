"""Template layer: tool definitions, tool calls and tool results."""

from templatecheck.checks import tools
from templatecheck.plugin import CheckRunner


def test_tools(tc: CheckRunner) -> None:
    tc.run(tools.tools)
