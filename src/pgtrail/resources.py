"""Locates the SQL shipped with pgtrail: ``schema/`` migrations and ``queries/`` reports.

In a wheel they live inside the package (``pgtrail/_sql``); in a source checkout they are
the top-level folders of the repository.
"""

from __future__ import annotations

from pathlib import Path

_PACKAGE_DIR = Path(__file__).resolve().parent


def _sql_dir(name: str) -> Path:
    bundled = _PACKAGE_DIR / "_sql" / name
    if bundled.is_dir():
        return bundled
    return _PACKAGE_DIR.parent.parent / name


def schema_dir() -> Path:
    """Folder of the numbered migration files."""
    return _sql_dir("schema")


def queries_dir() -> Path:
    """Folder of the saved reports shipped with pgtrail."""
    return _sql_dir("queries")
