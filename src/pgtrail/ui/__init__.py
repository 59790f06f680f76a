"""``pgtrail ui``: a read-only web UI over the log tables, served from the user's PostgreSQL.

Server-rendered pages (Jinja2, autoescaped) with a JSON twin each, charts drawn as SVG on the
server, no JavaScript, nothing fetched from elsewhere. Every read runs in the read sandbox,
bound to the UI's tenant when it has one, exactly as ``pgtrail report --tenant`` does.
"""
