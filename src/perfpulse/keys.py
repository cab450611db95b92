"""The collector's three secrets and how requests prove they hold one.

========================  ===========================================  =========================
key                       used by                                      sent as
========================  ===========================================  =========================
PERFPULSE_INGEST_KEY      server-side agents (``/api/v1/events``)      ``Authorization: Bearer``
PERFPULSE_PUBLIC_KEY      browser beacons (``/api/v1/rum``)            ``?key=`` in the URL
PERFPULSE_READ_TOKEN      the query API and the dashboard              ``Authorization: Bearer``
========================  ===========================================  =========================

Each comes from the environment or, when absent, is generated on first start and
kept in ``<data dir>/keys.json`` (mode 0600); generated keys are printed once.
Keys are compared in constant time.
"""

from __future__ import annotations

import hmac
import json
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

ENV_INGEST_KEY = "PERFPULSE_INGEST_KEY"
ENV_PUBLIC_KEY = "PERFPULSE_PUBLIC_KEY"
ENV_READ_TOKEN = "PERFPULSE_READ_TOKEN"
ENV_ALLOWED_ORIGINS = "PERFPULSE_ALLOWED_ORIGINS"
_FIELDS = {"ingest_key": ENV_INGEST_KEY, "public_key": ENV_PUBLIC_KEY, "read_token": ENV_READ_TOKEN}


@dataclass(frozen=True, slots=True)
class Keys:
    ingest_key: str
    public_key: str
    read_token: str

    @classmethod
    def load(cls, data_dir: Path, env: Mapping[str, str] | None = None) -> tuple[Keys, list[str]]:
        """Keys from ``env`` (default: the process environment), else the data dir,
        else new ones. Returns the keys and the names that were just generated."""
        env = os.environ if env is None else env
        path = data_dir / "keys.json"
        stored: dict[str, str] = {}
        if path.exists():
            stored = json.loads(path.read_text())
        values: dict[str, str] = {}
        generated: list[str] = []
        for attr, env_name in _FIELDS.items():
            if env.get(env_name):
                values[attr] = env[env_name]
            elif stored.get(attr):
                values[attr] = stored[attr]
            else:
                prefix = {"ingest_key": "ppi_", "public_key": "ppp_", "read_token": "ppr_"}[attr]
                values[attr] = prefix + secrets.token_urlsafe(24)
                stored[attr] = values[attr]
                generated.append(env_name)
        if generated:
            data_dir.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                json.dump(stored, f)
            os.replace(tmp, path)
        return cls(**values), generated


def matches(given: str | None, expected: str) -> bool:
    """Constant-time comparison; ``None`` never matches."""
    if given is None:
        return False
    return hmac.compare_digest(given.encode(), expected.encode())


def bearer(header: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header."""
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def parse_origins(value: str | None) -> frozenset[str]:
    """``PERFPULSE_ALLOWED_ORIGINS``: comma-separated origins, or ``*``."""
    if not value:
        return frozenset()
    return frozenset(o.strip().rstrip("/") for o in value.split(",") if o.strip())
