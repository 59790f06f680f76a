"""The ``pgtrail`` command line."""

from __future__ import annotations

from pgtrail.cli import (  # noqa: F401  (each module registers its commands on import)
    demo_cmd,
    doctor_cmd,
    migrate_cmd,
    partitions_cmd,
    writer_cmds,
)
from pgtrail.cli.app import app, main

__all__ = ["app", "main"]
