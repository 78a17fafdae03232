"""Bearer-token authentication of the API and metrics: constant-time, never logged."""

from __future__ import annotations

import hmac

from pydantic import SecretStr


def token_text(token: str | SecretStr | None) -> str | None:
    """The configured token as text; None disables authentication. An empty one is refused.

    An empty ``RFM_API_TOKEN`` is almost certainly a deployment mistake, and treating it as
    "no auth" would open the API silently, so the worker stops at start-up instead.
    """
    if token is None:
        return None
    text = token.get_secret_value() if isinstance(token, SecretStr) else token
    if not text.strip():
        raise ValueError("api_token is empty: set a real token, or unset RFM_API_TOKEN")
    return text


def bearer(header: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, or None."""
    if not header:
        return None
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


def authorized(expected: str | None, header: str | None) -> bool:
    """True when no token is configured, or the header carries exactly it.

    Compared in constant time, so response timing says nothing about how much of a guess was
    right.
    """
    if expected is None:
        return True
    given = bearer(header)
    return given is not None and hmac.compare_digest(given.encode(), expected.encode())
