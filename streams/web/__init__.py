"""The worker's HTTP side: JSON API, the marketing dashboard, health, readiness and metrics.

Everything is served by the Faust worker's own web server (``RFM_WEB_PORT``), so there is no
second process to deploy and the API reads exactly what the stream wrote. One call wires it::

    web = register_web(app, settings, processor, api_token=...)

Routes (all JSON except ``/``, ``/dashboard`` and ``/metrics``; errors are
``{"error": <code>, "detail": <what to do>}`` with a matching status):

=================================  ===========================================================
``GET /api/customers/{id}``        the Redis profile (typed) plus ``history`` (``?limit=``)
``GET /api/segments``              customers per RFM segment and per quadrant
``GET /api/segments/{dim}/{name}`` member ids of one audience (``?limit=``)
``GET /api/segments/history``      segment sizes sampled every few seconds (in memory)
``GET /api/segments/flows``        from → to counts over the recent segment changes
``GET /api/alerts/recent``         recent churn alerts, newest event time first (``?limit=``)
``GET /health``                    liveness: 200 while the process serves HTTP
``GET /ready``                     readiness: 200 when consuming and Redis answers, else 503
``GET /metrics``                   Prometheus text format (own registry)
``GET /`` and ``/dashboard``       the dashboard (one self-contained page, polls the API)
=================================  ===========================================================

With an API token, ``/api/*`` and ``/metrics`` need ``Authorization: Bearer <token>``; the
probes stay open (orchestrators call them without credentials) and so does the dashboard page,
which holds no data and sends the token it was opened with (``?token=``).

Recent alerts and segment changes reach :meth:`~streams.web.side.WebSide.take_outputs` from the
worker's ``offers`` agent (the one reader of ``segment-changes`` and ``churn-alerts``), which
keeps two small Redis sorted sets (``P recent:alerts``, ``P recent:changes:<dimension>``),
scored by event time and capped. Redis rather than memory, because each worker consumes only
some partitions: a per-process ring would show a different slice on every worker. A sorted set
rather than a list, because the member is the record itself: a redelivered record changes
nothing, where an ``LPUSH`` would show it twice. The worker's ``web_feed`` agent hands it the
retention offers, which it counts by decision.

Modules: :mod:`~streams.web.api` (the routes), :mod:`~streams.web.feed` (the dashboard's live
feed and page), :mod:`~streams.web.metrics` (Prometheus), :mod:`~streams.web.auth` (the API
token), :mod:`~streams.web.side` (the state behind the routes), :mod:`~streams.web.wiring`
(:func:`register_web`). The web side imports nothing of the worker or the tools.
"""

from streams.web.wiring import SAMPLE_SECONDS, register_web, registered_web

__all__ = ["SAMPLE_SECONDS", "register_web", "registered_web"]
