"""Setup: what to paste to send data to this collector.

The browser snippet (with the public key, which is public by design: it only
lets browsers send beacons from allowed origins), the Python agent's
``init(...)`` and the OpenTelemetry exporter's environment. The ingest key is
never shown: the dashboard only needs the read token, so the page names the
environment variable that holds the key instead.
"""

from __future__ import annotations

from typing import Any

from perfpulse.keys import ENV_ALLOWED_ORIGINS, ENV_INGEST_KEY
from perfpulse.web.pages import PageContext


def build(ctx: PageContext) -> dict[str, Any]:
    return {
        "base_url": ctx.base_url,
        "public_key": ctx.keys.public_key,
        "ingest_env": ENV_INGEST_KEY,
        "origins_env": ENV_ALLOWED_ORIGINS,
    }
