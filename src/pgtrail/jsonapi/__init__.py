"""Any language in: executions, processes and events as plain JSON over HTTP.

Served by the OTLP receiver (:mod:`pgtrail.otlp.server`) on its port, behind its token,
size limit, gzip support and backpressure. :mod:`pgtrail.jsonapi.api` routes a request and
answers it; :mod:`pgtrail.jsonapi.bodies` validates bodies with the writer's own models;
:mod:`pgtrail.jsonapi.records` turns them into the client's records;
:mod:`pgtrail.jsonapi.idempotency` recognises retries; :mod:`pgtrail.jsonapi.ack` answers
once the records are durable.
"""

EXECUTIONS_PATH = "/v1/executions"
"""Every route of the JSON API lies at or below this path."""
