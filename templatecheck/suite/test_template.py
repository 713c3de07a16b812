"""Template layer: what the chat template renders."""

from templatecheck.checks import agent, sandbox, template
from templatecheck.plugin import CheckRunner


def test_renders(tc: CheckRunner) -> None:
    tc.run(template.renders)


def test_generation_prompt(tc: CheckRunner) -> None:
    tc.run(template.generation_prompt)


def test_prefix_stability(tc: CheckRunner) -> None:
    tc.run(template.prefix_stability)


def test_content_fidelity(tc: CheckRunner) -> None:
    tc.run(template.content_fidelity)


def test_assistant_mask(tc: CheckRunner) -> None:
    tc.run(template.assistant_mask)


def test_sandbox(tc: CheckRunner) -> None:
    tc.run(sandbox.sandbox)


def test_agent_loop(tc: CheckRunner) -> None:
    tc.run(agent.agent_loop)


def test_closed_turns(tc: CheckRunner) -> None:
    tc.run(agent.closed_turns)
