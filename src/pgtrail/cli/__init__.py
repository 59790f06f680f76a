"""The ``pgtrail`` command line."""

from __future__ import annotations

from pgtrail.cli import doctor_cmd, migrate_cmd, partitions_cmd  # noqa: F401  (registers the commands)
from pgtrail.cli.app import app, main

__all__ = ["app", "main"]
