"""One call adds the HTTP side to a worker: its routes and the segment-size sampler.

The web side imports nothing of the worker: the worker's ``web_feed`` agent (in
:mod:`streams.worker.app`) hands it the retention offers it counts.
"""

from __future__ import annotations

import logging
import weakref
from typing import Final

import faust
from pydantic import SecretStr

from streams.config import Settings
from streams.web.api import ROUTES
from streams.web.feed import HISTORY_POINTS
from streams.web.metrics import CountersSource
from streams.web.side import WebSide

log = logging.getLogger(__name__)


SAMPLE_SECONDS: Final = 5.0


_registered: weakref.WeakKeyDictionary[faust.App, WebSide] = weakref.WeakKeyDictionary()


def registered_web(app: faust.App) -> WebSide | None:
    """The handle :func:`register_web` returned for ``app``, if it was called."""
    return _registered.get(app)


def register_web(
    app: faust.App,
    settings: Settings,
    processor: CountersSource,
    *,
    api_token: str | SecretStr | None = None,
    sample_seconds: float = SAMPLE_SECONDS,
    history_points: int = HISTORY_POINTS,
) -> WebSide:
    """Add the API, dashboard, probes and metrics to ``app``'s web server; once per app.

    Also registers the segment-size sampler (a task). Returns the handle whose
    ``observe_batch`` the stream calls after each batch, and whose ``take_outputs`` the
    worker's agents call with the output records the dashboard shows.
    """
    if app in _registered:
        raise RuntimeError(f"register_web was already called for app {app.conf.id!r}")
    if app.conf.web_in_thread:
        raise ValueError(
            "web_in_thread must be off: the routes share the worker's event loop and Redis client"
        )
    side = WebSide(
        app,
        settings,
        processor,
        api_token=api_token,
        sample_seconds=sample_seconds,
        history_points=history_points,
    )
    for path, view in ROUTES:
        bound = type(view.__name__, (view,), {"side": side, "__module__": __name__})
        app.page(path, name=f"rfm-{path}")(bound)

    async def sample_segments() -> None:
        """Segment sizes every few seconds, for the dashboard's chart."""
        await side.run_sampler()

    app.task(sample_segments)
    _registered[app] = side
    log.info(
        "web: API, dashboard and /metrics on port %s (API token %s)",
        settings.web_port,
        "required" if side.token else "not required",
    )
    return side
