"""Fixtures for the daemon's HTTP tests live in daemon_env.py (importable by the test modules)."""

from daemon_env import _memory_pw_type, env, env_no_token  # noqa: F401
