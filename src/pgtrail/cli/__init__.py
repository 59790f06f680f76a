"""The ``pgtrail`` command line."""

from __future__ import annotations

from pgtrail.cli import (  # noqa: F401  (each module registers its commands on import)
    check_cmd,
    demo_cmd,
    doctor_cmd,
    inspect_cmds,
    migrate_cmd,
    otlp_cmd,
    partitions_cmd,
    report_cmds,
    retention_cmd,
    rollup_cmd,
    tenant_cmd,
    ui_cmd,
    writer_cmds,
)
from pgtrail.cli.app import app, main

__all__ = ["app", "main"]
