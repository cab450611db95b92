"""Route templates, and a cap on how many distinct routes one service may have.

Every distinct route is a row in every rollup, so a route that carries an id
(``/orders/12345``) would make one time series per order. Ingest guards against
that twice:

1. :func:`template_path` turns a concrete path into a template by replacing the
   segments that look like values with a placeholder;
2. :class:`RouteFolder` caps the number of distinct routes per service, so what
   the heuristics miss (``/users/alice``) cannot grow without bound either.

**Placeholders.** A path segment is replaced whole, first rule that matches:

============  ===========================================================
``{id}``      a number: ``12345``
``{uuid}``    a UUID: ``550e8400-e29b-41d4-a716-446655440000``
``{date}``    an ISO date, with or without time: ``2024-01-31``
``{email}``   an email address, also as ``%40``: ``alice@example.com``
``{hash}``    hex with a digit, 16 or more long, or 8 to 15 with a letter too:
              ``3f9a8c1b``
``{token}``   a JWT (``eyJ...``), or 8 or more of ``[A-Za-z0-9_-]`` (and ``=``
              padding) with a digit and a letter that change class at least 4
              times, the way random strings do: ``dQw4w9WgXcQ``
``{id}``      without separators, a run of 4 or more digits: ``ORD12345678``
============  ===========================================================

A segment with ``.``, ``-``, ``_`` or ``~`` in it that matched none of these is
treated as a name made of parts, so a build hash in a file name keeps the
name: ``app.3f9a8c1b2d.js`` becomes ``app.{hash}.js``, ``index-BpK8Lz3a.js``
becomes ``index-{token}.js``. A part becomes ``{uuid}``, ``{hash}``, ``{token}``,
or ``{id}`` if it has a run of 4 or more digits (``order-12345`` becomes
``order-{id}``, while ``top-10-tips`` and ``3.12`` stay).

Kept as they are: segments without a digit (``how-to-cache``, except emails),
version segments (``v2``, ``v1beta1``), short mixes (``oauth2``, ``x86``), and
segments already in template form: ``{id}``, ``:id``, ``<int:id>``, ``*``.

**Normalization.** The query and the fragment are dropped; a full URL
(``https://host/p``) keeps only its path; empty segments are removed, so
``//a/b/`` becomes ``/a/b``; the result always starts with ``/`` (``""`` gives
``/``). Case is kept: paths are case sensitive. ``template_path`` is
idempotent and never raises.

Example::

    >>> template_path("/users/550e8400-e29b-41d4-a716-446655440000/orders/42?page=2")
    '/users/{uuid}/orders/{id}'
    >>> folder = RouteFolder(cap=2)
    >>> [folder.fold("shop", r) for r in ["/a", "/b", "/c", "/a"]]
    ['/a', '/b', 'other', '/a']
    >>> folder.folded_total
    1
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import lru_cache

__all__ = ["OTHER", "RouteFolder", "template_path"]

#: What :meth:`RouteFolder.fold` returns for a route over the cap. It does not
#: start with ``/``, so it can never be mistaken for a real route.
OTHER = "other"

_CACHE_MAX_LEN = 2048
_CACHE_SIZE = 8192

_FULL_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://[^/]*")
_DIGIT = re.compile(r"[0-9]")
_NUMBER = re.compile(r"[0-9]+")
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_DATE = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}"
    r"(?:[T ][0-9]{2}:[0-9]{2}(?::[0-9]{2}(?:\.[0-9]+)?)?(?:Z|[+-][0-9]{2}:?[0-9]{2})?)?"
)
_EMAIL = re.compile(r"[^@\s]+(?:@|%40)[^@\s]+\.[^@\s]+")
_HEX = re.compile(r"[0-9a-fA-F]+")
_LETTER = re.compile(r"[A-Za-z]")
_JWT = re.compile(r"eyJ[A-Za-z0-9_\-]*\.[A-Za-z0-9_\-]+(?:\.[A-Za-z0-9_\-]*)?")
_TOKEN = re.compile(r"[A-Za-z0-9_\-]{8,}=*")
_CLASS_RUN = re.compile(r"[a-z]+|[A-Z]+|[0-9]+")
_SEPARATORS = re.compile(r"[\-_]")
_DIGIT_RUN = re.compile(r"[0-9]{4,}")
_PARTS = re.compile(r"([\-._~])")


def template_path(path: str) -> str:
    """Return the route template of ``path`` (see the module for the rules)."""
    if len(path) > _CACHE_MAX_LEN:
        return _template(path)
    return _template_cached(path)


def _template(path: str) -> str:
    path = path.partition("#")[0].partition("?")[0]
    if not path.startswith("/") and (match := _FULL_URL.match(path)) is not None:
        path = path[match.end() :]
    segments = [_segment(segment) for segment in path.split("/") if segment]
    return "/" + "/".join(segments)


_template_cached = lru_cache(maxsize=_CACHE_SIZE)(_template)


def _segment(segment: str) -> str:
    first = segment[0]
    if (
        first == ":"
        or first == "*"
        or (first == "{" and segment[-1] == "}")
        or (first == "<" and segment[-1] == ">")
    ):
        return segment
    if _DIGIT.search(segment) is None:
        # Only an email can be a value without a digit in it.
        return "{email}" if "@" in segment and _EMAIL.fullmatch(segment) else segment
    if _NUMBER.fullmatch(segment):
        return "{id}"
    if _UUID.fullmatch(segment):
        return "{uuid}"
    if _DATE.fullmatch(segment):
        return "{date}"
    if _EMAIL.fullmatch(segment):
        return "{email}"
    if _is_hash(segment):
        return "{hash}"
    if _JWT.fullmatch(segment) or _is_token(segment):
        return "{token}"
    if _PARTS.search(segment) is None:
        return _part(segment)
    pieces = _PARTS.split(_UUID.sub("{uuid}", segment))
    pieces[::2] = [_part(piece) for piece in pieces[::2]]
    return "".join(pieces)


def _part(part: str) -> str:
    """Fold one part of a segment (or a segment without separators)."""
    if _is_hash(part):
        return "{hash}"
    if _is_token(part):
        return "{token}"
    if _DIGIT_RUN.search(part):
        return "{id}"
    return part


def _is_hash(text: str) -> bool:
    if len(text) < 8 or _HEX.fullmatch(text) is None or _DIGIT.search(text) is None:
        return False
    return len(text) >= 16 or _LETTER.search(text) is not None


def _is_token(text: str) -> bool:
    if _TOKEN.fullmatch(text) is None or _LETTER.search(text) is None:
        return False
    if _DIGIT.search(text) is None:
        return False
    core = text.rstrip("=")
    words = [word for word in _SEPARATORS.split(core) if word]
    changes = len(_CLASS_RUN.findall(core)) - len(words)
    return len(core) >= 8 and changes >= 4


class RouteFolder:
    """Cap the number of distinct routes each service may have.

    The first ``cap`` distinct routes a service sends are kept; after that, a
    route the folder has not seen for that service comes back as
    :data:`OTHER` (``"other"``), and the fold is counted, overall in
    :attr:`folded_total` and per service in :meth:`folded`. Known routes keep
    passing through. Each call is a dict and a set lookup.

    At start, :meth:`seed` the folder with the routes storage already has, so a
    restart does not hand out ``cap`` fresh slots.

    Memory is bounded by ``cap * max_services`` routes. A service first seen
    after ``max_services`` services are known is not tracked at all: every one
    of its routes is folded to ``"other"`` and counted in :attr:`folded_total`
    only. The route ``"other"`` itself is passed through and never takes a slot.

    Not thread-safe: it is meant for the event loop.

    Example::

        folder = RouteFolder(cap=1000)
        for service, routes in routes_in_storage.items():
            folder.seed(service, routes)
        route = folder.fold(service, template_path(event.route))
    """

    def __init__(self, cap: int = 1000, max_services: int = 10_000) -> None:
        if cap < 0:
            raise ValueError(f"cap must be >= 0, not {cap}")
        if max_services < 1:
            raise ValueError(f"max_services must be >= 1, not {max_services}")
        self.cap = cap
        self.max_services = max_services
        #: Events folded to ``"other"``, all services together.
        self.folded_total = 0
        self._routes: dict[str, set[str]] = {}
        self._folded: dict[str, int] = {}

    def seed(self, service: str, routes: Iterable[str]) -> None:
        """Mark ``routes`` as known for ``service``, up to the cap, in the given order.

        Routes past the cap are ignored, so pass the ones that matter most first.
        Seeding counts no folds.
        """
        known = self._known(service)
        if known is None:
            return
        for route in routes:
            if len(known) >= self.cap:
                break
            if route != OTHER:
                known.add(route)

    def fold(self, service: str, route: str) -> str:
        """Return ``route``, or ``"other"`` when ``service`` is at its cap and ``route`` is new."""
        known = self._routes.get(service)
        if known is None:
            known = self._known(service)
            if known is None:
                self.folded_total += 1
                return OTHER
        if route in known or route == OTHER:
            return route
        if len(known) < self.cap:
            known.add(route)
            return route
        self.folded_total += 1
        self._folded[service] = self._folded.get(service, 0) + 1
        return OTHER

    def folded(self, service: str) -> int:
        """How many of ``service``'s events were folded to ``"other"`` (0 if untracked)."""
        return self._folded.get(service, 0)

    def route_count(self, service: str) -> int:
        """How many distinct routes ``service`` holds (at most ``cap``)."""
        return len(self._routes.get(service, ()))

    def _known(self, service: str) -> set[str] | None:
        known = self._routes.get(service)
        if known is None and len(self._routes) < self.max_services:
            known = self._routes[service] = set()
        return known
