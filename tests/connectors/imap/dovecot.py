"""The tests' Dovecot: syncd.sandbox.dovecot (shared with the demo and the benchmark)."""

from syncd.sandbox.dovecot import Dovecot, available, free_port

__all__ = ["Dovecot", "available", "free_port"]
