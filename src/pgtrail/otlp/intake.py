"""What a transport needs from the OTLP receiver: the seam between its servers and its core.

The receiver (:class:`pgtrail.otlp.server.OtlpReceiver`) decodes, journals and assembles
spans whatever carried them. Its HTTP server is part of it; other transports (the gRPC
server in :mod:`pgtrail.otlp.grpc_server`) reach it only through :class:`Intake`, so they
check the same token, share the same bound on exports in progress, count in the same
metrics and answer after the same durable step.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

PROTOBUF = "application/x-protobuf"
"""The media type of OTLP/protobuf bodies."""


@dataclass(frozen=True)
class Accepted:
    """What became of one accepted export request.

    Args:
        rejected: Spans left out of it (an OTLP ``partial_success``).
        reason: Why the first of them was left out, naming its trace and span ids; empty
            when none was.
    """

    rejected: int = 0
    reason: str = ""


class Intake(Protocol):
    """The receiver's door for a transport other than its own HTTP server."""

    def authorised(self, authorization: str) -> bool:
        """Whether an ``Authorization`` value carries the receiver's bearer token.

        Args:
            authorization: The value as sent (``Bearer <token>``), empty when none was.
        """
        ...

    def begin_export(self) -> None:
        """Takes a place among the exports in progress; :meth:`end_export` gives it back.

        Raises:
            ReceiverBusyError: Too many exports are in progress, or the writer's queue is
                full; nothing was taken.
        """
        ...

    def end_export(self) -> None:
        """Gives back the place :meth:`begin_export` took (from any thread)."""
        ...

    def export(self, body: bytes, content_type: str) -> Accepted:
        """Decodes one request and holds its spans; returns once they are durable.

        Args:
            body: The request body, decompressed.
            content_type: :data:`PROTOBUF`, or ``application/json`` for OTLP/JSON.

        Raises:
            OtlpDecodeError: The body is not an OTLP trace request; nothing was held.
            AssemblyUnavailableError: Redis or the span journal is unreachable; nothing
                was held.
        """
        ...

    def count_answer(self, route: str, code: int, *, refused: bool) -> None:
        """Counts one answered request in the receiver's metrics.

        Args:
            route: The ``route`` label it is counted under.
            code: The status code answered (for gRPC, its numeric status code).
            refused: It was answered with an error.
        """
        ...
