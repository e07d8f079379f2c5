"""Fixtures of the end-to-end scenarios (tests/scenarios/scenario_env.py)."""

from scenario_env import world  # noqa: F401
