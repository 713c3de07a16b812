"""Template layer: unusual role orders, default system prompt, clock."""

from templatecheck.checks import roles
from templatecheck.plugin import CheckRunner


def test_role_policy(tc: CheckRunner) -> None:
    tc.run(roles.role_policy)


def test_default_system_prompt(tc: CheckRunner) -> None:
    tc.run(roles.default_system_prompt)


def test_clock(tc: CheckRunner) -> None:
    tc.run(roles.clock)
