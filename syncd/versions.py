"""The versions a support request needs: syncd, Python, the XML parser and the database stack.

syncd's behaviour depends on some of them (lxml's parser at a syntax error, the database driver),
so `syncd check` and `syncd --version --verbose` print them, and `python -m syncd.versions` does
for the Makefile's test-latest and test-compat venvs.
"""

from __future__ import annotations

import platform
from importlib.metadata import PackageNotFoundError, version


def _dist(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "not installed"


def _dotted(v: tuple[int, ...]) -> str:
    return ".".join(str(x) for x in v)


def _driver(database_url: str | None) -> dict[str, str]:
    scheme = (database_url or "").split(":", 1)[0].lower()
    out: dict[str, str] = {}
    if not scheme or scheme.startswith("sqlite"):
        import sqlite3

        out["sqlite"] = sqlite3.sqlite_version
    if not scheme or scheme.startswith("postgres"):
        try:
            import psycopg

            out["psycopg"] = psycopg.__version__
            out["libpq"] = _libpq(psycopg.pq.version())
        except ImportError:
            out["psycopg"] = "not installed"
    return out


def _libpq(v: int) -> str:
    # libpq reports 150019 for 15.19 (10 and later: major * 10000 + minor)
    return f"{v // 10000}.{v % 10000}" if v >= 100000 else str(v)


def versions(database_url: str | None = None) -> dict[str, str]:
    """Name → version; the database driver of `database_url` only (both when it is None)."""
    from lxml import etree

    out = {
        "syncd": _dist("syncd"),
        "python": platform.python_version(),
        "lxml": _dotted(etree.LXML_VERSION[:3]),
        "libxml2": _dotted(etree.LIBXML_VERSION),
        "sqlalchemy": _dist("sqlalchemy"),
        "alembic": _dist("alembic"),
    }
    out.update(_driver(database_url))
    out["imapclient"] = _dist("imapclient")
    return out


def describe(database_url: str | None = None) -> str:
    """One line: `syncd 0.1.0, python 3.11.7, lxml 6.2.1, libxml2 2.14.6, …`."""
    return ", ".join(f"{k} {v}" for k, v in versions(database_url).items())


if __name__ == "__main__":
    for name, v in versions().items():
        print(f"{name:12} {v}")
