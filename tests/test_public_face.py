"""The public face loads on first use: every exported name resolves, and a command line
start-up does not pay for the writer, its pool or Redis."""

from __future__ import annotations

import subprocess
import sys

import pytest

import pgtrail


def test_every_exported_name_resolves_and_is_listed() -> None:
    for name in pgtrail.__all__:
        assert getattr(pgtrail, name) is not None, name
    assert set(pgtrail.__all__) <= set(dir(pgtrail))
    assert pgtrail.Trail.__module__ == "pgtrail.trail"
    assert isinstance(pgtrail.__version__, str) and pgtrail.__version__


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'Trial'"):
        pgtrail.Trial  # type: ignore[attr-defined]  # noqa: B018


def test_starting_the_command_line_loads_neither_the_writer_nor_redis() -> None:
    probe = (
        "import sys, pgtrail.cli; "
        "print(sorted(m for m in ('pgtrail.trail', 'pgtrail.writer.flusher', 'redis', "
        "'psycopg_pool', 'pgtrail.demo.simulate', 'uvicorn', 'grpc') if m in sys.modules))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert loaded == "[]"
