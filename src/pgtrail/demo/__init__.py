"""The demo: a simulated ten-agent workload written through the public writer API.

``pgtrail demo`` loads it (see :mod:`pgtrail.demo.load`) and tours the saved reports that
find the problems planted in it (:mod:`pgtrail.demo.plant`, :mod:`pgtrail.demo.tour`).
"""
