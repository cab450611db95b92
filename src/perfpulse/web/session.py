"""Dashboard sessions: a signed, HttpOnly, SameSite cookie and CSRF tokens.

Logging in means presenting the read token once, in the login form. The
collector then sets ``perfpulse_session``: a random session id, signed and
timestamped (itsdangerous) with a secret derived from the read token, so
rotating the token logs every browser out. The cookie is ``HttpOnly`` (scripts
cannot read it), ``SameSite=Strict`` (other sites cannot send it) and
``Secure`` when the dashboard is served over HTTPS.

Every state-changing form also carries a CSRF token: an HMAC of the session id
(or, on the login form, of a random pre-session cookie), checked in constant
time. A token from one session is worthless in another.

Example::

    sessions = Sessions(read_token="ppr_…")
    cookie = sessions.issue()
    sid = sessions.verify(cookie)          # None when forged or expired
    token = sessions.csrf(sid)
    assert sessions.csrf_ok(sid, token)
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from itsdangerous import BadSignature, URLSafeTimedSerializer

COOKIE = "perfpulse_session"
PRE_COOKIE = "perfpulse_login"  # the login form's CSRF anchor, before a session exists
MAX_AGE_S = 12 * 3600


class Sessions:
    """Issues and checks session cookies and CSRF tokens for one read token."""

    def __init__(self, read_token: str, max_age_s: int = MAX_AGE_S) -> None:
        self._secret = hmac.new(read_token.encode(), b"perfpulse-session", hashlib.sha256).digest()
        self._signer = URLSafeTimedSerializer(self._secret, salt="perfpulse-dashboard")
        self.max_age_s = max_age_s

    def issue(self) -> str:
        """A new signed session cookie value."""
        return self._signer.dumps(secrets.token_urlsafe(18))

    def verify(self, cookie: str | None) -> str | None:
        """The session id inside a valid, unexpired cookie, else ``None``."""
        if not cookie:
            return None
        try:
            sid = self._signer.loads(cookie, max_age=self.max_age_s)
        except BadSignature:  # also SignatureExpired, its subclass
            return None
        return sid if isinstance(sid, str) else None

    def csrf(self, anchor: str) -> str:
        """The CSRF token for a session id or a pre-session anchor."""
        return hmac.new(self._secret, b"csrf:" + anchor.encode(), hashlib.sha256).hexdigest()

    def csrf_ok(self, anchor: str | None, token: str | None) -> bool:
        if not anchor or not token:
            return False
        return hmac.compare_digest(self.csrf(anchor).encode(), token.encode())


def new_anchor() -> str:
    return secrets.token_urlsafe(18)


__all__ = ["COOKIE", "MAX_AGE_S", "PRE_COOKIE", "Sessions", "new_anchor"]
