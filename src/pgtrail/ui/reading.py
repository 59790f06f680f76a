"""The UI's one door to the database: every read in the sandbox, bound to the UI's tenant.

Pages that the read side already answers (a trace, a journey, a saved report, ad-hoc SQL)
call those functions with :attr:`Reader.tenant`; the UI's own statements
(``statements/ui.sql``) run here in one :func:`pgtrail.read.sandbox.read_session`, the same
binding ``pgtrail report --tenant`` uses. No tenant filter is ever written into SQL text.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import psycopg

from pgtrail import db
from pgtrail.config import Settings
from pgtrail.read import reports, sandbox
from pgtrail.statements import STATEMENTS


@dataclass(frozen=True)
class Reader:
    """How the UI reads: the settings, the tenant it shows, and the statement timeout.

    Attributes:
        settings: the connection settings.
        tenant: the only tenant shown, or None for every tenant the role may read.
        timeout_ms: statement_timeout of every read, in ms; None for the settings' own.
    """

    settings: Settings
    tenant: str | None = None
    timeout_ms: int | None = None

    @property
    def limit_ms(self) -> int:
        """The statement timeout in force, in ms."""
        return self.timeout_ms or self.settings.statement_timeout_ms

    @contextmanager
    def session(self, what: str) -> Iterator[Session]:
        """One sandboxed read-only transaction for the statements of one page.

        Args:
            what: what is read, for the error message when a read fails.

        Raises:
            ReportError: a statement failed or ran past the timeout.
            SandboxError: the sandbox is not ready for the connected role.
            TenancyError: the tenant cannot be applied.
        """
        with db.connect(self.settings) as conn:
            try:
                with sandbox.read_session(conn, self.limit_ms, tenant=self.tenant) as inner:
                    yield Session(inner)
            except psycopg.Error as exc:
                raise reports.query_failure(what, exc, self.limit_ms) from exc


@dataclass(frozen=True)
class Session:
    """Runs the UI's named statements inside one read session.

    Attributes:
        inner: the sandboxed session.
    """

    inner: sandbox.ReadSession

    def rows(self, name: str, params: Mapping[str, object]) -> list[dict[str, Any]]:
        """The rows of the statement ``name`` of ``statements/*.sql``, as dictionaries.

        Args:
            name: the statement's name (``ui_top_users``...).
            params: a value for each of its placeholders.
        """
        return self.inner.query(STATEMENTS[name], params).dicts()
