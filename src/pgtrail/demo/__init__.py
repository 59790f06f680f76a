"""The demo: a simulated ten-agent workload written through the public writer API.

``pgtrail demo`` loads it (see :mod:`pgtrail.demo.load`) and tours the saved reports that
find the problems planted in it (:mod:`pgtrail.demo.plant`, :mod:`pgtrail.demo.tour`).
"""

DEFAULT_INTERACTIONS = 8_000
"""User messages simulated by default (each one a ``001 Main`` execution)."""
DEFAULT_DAYS = 28
"""Days the simulated window spans by default."""
DEFAULT_SEED = 7
"""The default random seed: the same seed loads the same data."""
DEFAULT_TENANTS = 3
"""Tenants the users are spread over by default."""
