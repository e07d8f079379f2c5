"""Faithful emulators of the peers syncd talks to (used by `syncd demo` and the tests)."""
