"""Take the private parts out of a URL before it is stored.

A page URL from the browser, or a resource URL from resource timing, can carry a
password (``https://user:pass@host/``), a session token in the query string
(``?token=abc``) or personal data in the fragment (``#email=...``). None of that
is performance data, so :func:`redact_url` removes it and keeps the shape:

- **credentials** (``user:pass@``) are dropped; host and port are kept;
- **query values** are dropped and the keys kept, in order and with repeats:
  ``?id=42&id=43&token=abc`` becomes ``?id=&id=&token=``;
- a **query item without** ``=`` is kept only when it reads like a flag name
  (1 to 32 letters, ``_``, ``-``, ``.``, ``[`` or ``]``, so ``?debug`` stays):
  anything else, such as a cache buster ``?1699999999`` or a bare token, is a
  value and is dropped, as are empty items (``&&``); a query left empty loses
  its ``?``. Items are split on ``&`` only: ``?a=1;b=2`` gives ``?a=``;
- the **fragment** is dropped whole (``#...``);
- everything else (scheme, host, port, path, percent-encoding) is kept exactly as
  written. The path is not templated here: that is
  :func:`perfpulse.ingest.routes.template_path`'s job.

It never raises, whatever the input; what it returns for odd input:

- whitespace around the scheme-host-path part and around keys is stripped;
  ``""`` and ``"#x"`` give ``""``;
- a relative URL (``/a?b=c``, ``a/b``) is redacted the same way (``/a?b=``);
- an *opaque* URL, whose scheme is not followed by ``//`` (``mailto:``,
  ``data:``, ``tel:``, ``javascript:``, ``blob:``), keeps only its scheme:
  ``mailto:alice@example.com`` gives ``mailto:``, and so does anything that
  starts like a scheme: ``localhost:3000/x`` gives ``localhost:``;
- a URL whose host and port cannot be read (a space in the host, a non-numeric
  port, an unclosed ``[``) gives ``""``: a password with a ``/`` in it ends the
  host early, so nothing after the scheme can be trusted.

Keys are kept as written: a URL that carries a secret in a key (``?<token>=``)
still leaks it. Agents should not do that.

The function is idempotent (``redact_url(redact_url(u)) == redact_url(u)``) and
cached: the ingest path sees the same few hundred URLs over and over.

Example::

    >>> redact_url("https://user:pass@shop.example.com:8443/cart?id=42&token=abc#frag")
    'https://shop.example.com:8443/cart?id=&token='
    >>> redact_url("/search?q=secret+stuff&page=2")
    '/search?q=&page='
"""

from __future__ import annotations

import re
from functools import lru_cache

__all__ = ["redact_url"]

#: URLs longer than this are redacted without the cache, which bounds the cache's
#: memory to about ``_CACHE_SIZE * 2 * _CACHE_MAX_LEN`` characters.
_CACHE_MAX_LEN = 2048
_CACHE_SIZE = 8192

_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*:")
# A host (a bracketed IPv6 literal or a registered name) and an optional port.
_HOST_PORT = re.compile(r"(?:\[[^\[\]/?#@\s]*\]|[^\[\]/?#@:\s]*)(?::[0-9]*)?")
_FLAG = re.compile(r"[A-Za-z_.\-\[\]]{1,32}")


def redact_url(url: str) -> str:
    """Return ``url`` without credentials, query values or fragment (see the module)."""
    if len(url) > _CACHE_MAX_LEN:
        return _redact(url)
    return _redact_cached(url)


def _redact(url: str) -> str:
    head, _, query = url.partition("#")[0].partition("?")
    head = head.strip()

    prefix = ""
    match = _SCHEME.match(head)
    if match is not None:
        if not head.startswith("//", match.end()):
            return match.group()  # opaque: mailto:, data:, tel:, javascript:
        prefix = match.group()
        head = head[match.end() :]
    if head.startswith("//"):  # an authority, also without a scheme (``//cdn.example/x``)
        slash = head.find("/", 2)
        authority, path = (head[2:], "") if slash < 0 else (head[2:slash], head[slash:])
        host = authority.rpartition("@")[2]
        if _HOST_PORT.fullmatch(host) is None:
            return ""
        head = f"//{host}{path}"

    kept = [_redact_item(item) for item in query.split("&")] if query else []
    kept_query = "&".join(item for item in kept if item)
    return f"{prefix}{head}?{kept_query}" if kept_query else f"{prefix}{head}"


def _redact_item(item: str) -> str:
    key, equals, _ = item.partition("=")
    if equals:
        return f"{key.strip()}="
    return item if _FLAG.fullmatch(item) else ""


_redact_cached = lru_cache(maxsize=_CACHE_SIZE)(_redact)
