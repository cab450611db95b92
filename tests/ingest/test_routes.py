"""template_path golden cases, and RouteFolder's per-service cap."""

from __future__ import annotations

import random

import pytest

from perfpulse.ingest.routes import OTHER, RouteFolder, template_path

UUID = "550e8400-e29b-41d4-a716-446655440000"
JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U"

GOLDEN = [
    # The examples from the issue.
    ("/orders/12345", "/orders/{id}"),
    (f"/users/{UUID}/profile", "/users/{uuid}/profile"),
    ("/static/app.3f9a8c1b2d.js", "/static/app.{hash}.js"),
    ("/blog/how-to-cache", "/blog/how-to-cache"),
    ("/v2/items", "/v2/items"),
    # Whole segments.
    ("/users/42/orders/7", "/users/{id}/orders/{id}"),
    (f"/u/{UUID.upper()}", "/u/{uuid}"),
    ("/archive/2024-01-31", "/archive/{date}"),
    ("/d/2024-01-31T12:00:00Z", "/d/{date}"),
    ("/u/alice@example.com", "/u/{email}"),
    ("/u/alice%40example.com/settings", "/u/{email}/settings"),
    ("/commit/3f9a8c1b", "/commit/{hash}"),
    ("/blob/9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08", "/blob/{hash}"),
    ("/watch/dQw4w9WgXcQ", "/watch/{token}"),
    ("/x/Xk9-aB2_Lm3pQ7rT", "/x/{token}"),
    ("/c/cus_9s6XKzkNRiz8i3", "/c/{token}"),
    ("/k/k3j4h5k6l7m8n9b0v1c2", "/k/{token}"),
    (f"/reset/{JWT}", "/reset/{token}"),
    ("/orders/ORD12345678", "/orders/{id}"),
    # Names made of parts keep the parts that are not values.
    ("/assets/index-BpK8Lz3a.js", "/assets/index-{token}.js"),
    ("/main-XJ2K4L7Q.js", "/main-{token}.js"),
    (
        "/_next/static/chunks/pages/_app-3f9a8c1b2d4e5f60.js",
        "/_next/static/chunks/pages/_app-{hash}.js",
    ),
    ("/static/main.3f9a8c1b.chunk.js", "/static/main.{hash}.chunk.js"),
    (f"/f/user-{UUID}.json", "/f/user-{uuid}.json"),
    ("/orders/order-12345", "/orders/order-{id}"),
    ("/blog/top-10-tips-2024", "/blog/top-10-tips-{id}"),
    # Not values.
    ("/docs/3.12/library", "/docs/3.12/library"),
    ("/apis/apps/v1beta1", "/apis/apps/v1beta1"),
    ("/apis/apps/v1alpha1", "/apis/apps/v1alpha1"),
    ("/api/oauth2/token", "/api/oauth2/token"),
    ("/p/iPhone15", "/p/iPhone15"),
    ("/wiki/World_War_2", "/wiki/World_War_2"),
    ("/api/getUserById", "/api/getUserById"),
    ("/deadbeef", "/deadbeef"),
    ("/wiki/%E2%9C%93", "/wiki/%E2%9C%93"),
    ("/Users/Alice", "/Users/Alice"),
    # Templates already.
    ("/users/{id}", "/users/{id}"),
    ("/users/:id/posts/:post_id", "/users/:id/posts/:post_id"),
    ("/users/<int:id>", "/users/<int:id>"),
    ("/files/*", "/files/*"),
    # Normalization.
    ("/orders/12345/", "/orders/{id}"),
    ("/search?q=1#x", "/search"),
    ("/a#b?c", "/a"),
    ("https://shop.example.com/cart/42?x", "/cart/{id}"),
    ("https://shop.example.com", "/"),
    ("//a///b//", "/a/b"),
    ("orders/1", "/orders/{id}"),
    ("/", "/"),
    ("", "/"),
    ("?q=1", "/"),
]


@pytest.mark.parametrize(("path", "expected"), GOLDEN)
def test_golden(path: str, expected: str) -> None:
    assert template_path(path) == expected


@pytest.mark.parametrize(("path", "expected"), GOLDEN)
def test_idempotent_on_golden(path: str, expected: str) -> None:
    assert template_path(expected) == expected


def test_long_path_is_templated_without_the_cache() -> None:
    path = "/a/12345" * 1000
    assert template_path(path) == "/a/{id}" * 1000


def test_garbage_never_raises_and_is_idempotent() -> None:
    rng = random.Random(20240131)
    alphabet = "aZf09-_.~/{}:<>*@%?#é"
    for _ in range(5000):
        path = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 30)))
        once = template_path(path)
        assert once.startswith("/"), path
        assert template_path(once) == once, path


def test_folder_keeps_the_first_cap_routes_and_folds_the_rest() -> None:
    folder = RouteFolder(cap=2)
    routes = ["/a", "/b", "/c", "/a", "/d", "/b"]
    assert [folder.fold("shop", r) for r in routes] == ["/a", "/b", "other", "/a", "other", "/b"]
    assert folder.folded_total == 2
    assert folder.folded("shop") == 2
    assert folder.route_count("shop") == 2


def test_folder_caps_each_service_separately() -> None:
    folder = RouteFolder(cap=1)
    assert folder.fold("shop", "/a") == "/a"
    assert folder.fold("blog", "/b") == "/b"
    assert folder.fold("shop", "/b") == OTHER
    assert folder.fold("blog", "/a") == OTHER
    assert folder.fold("blog", "/c") == OTHER
    assert (folder.folded("shop"), folder.folded("blog"), folder.folded_total) == (1, 2, 3)
    assert folder.folded("unknown") == 0


def test_seed_takes_slots_in_order_up_to_the_cap_and_counts_no_folds() -> None:
    folder = RouteFolder(cap=2)
    folder.seed("shop", ["/old", OTHER, "/older", "/oldest"])
    assert folder.route_count("shop") == 2
    assert folder.folded_total == 0
    assert folder.fold("shop", "/older") == "/older"
    assert folder.fold("shop", "/oldest") == OTHER
    assert folder.fold("shop", "/new") == OTHER
    assert folder.folded_total == 2


def test_other_passes_through_without_taking_a_slot() -> None:
    folder = RouteFolder(cap=1)
    assert folder.fold("shop", OTHER) == OTHER
    assert folder.fold("shop", "/a") == "/a"
    assert folder.folded_total == 0


def test_services_past_max_services_fold_everything() -> None:
    folder = RouteFolder(cap=10, max_services=2)
    assert folder.fold("a", "/x") == "/x"
    assert folder.fold("b", "/x") == "/x"
    assert folder.fold("c", "/x") == OTHER
    folder.seed("d", ["/x"])
    assert folder.fold("d", "/x") == OTHER
    assert (folder.route_count("c"), folder.route_count("d")) == (0, 0)
    assert folder.folded_total == 2
    assert folder.folded("c") == 0


def test_cap_zero_folds_every_route() -> None:
    folder = RouteFolder(cap=0)
    assert folder.fold("shop", "/a") == OTHER
    assert folder.folded_total == 1


@pytest.mark.parametrize(("cap", "max_services"), [(-1, 10), (10, 0)])
def test_folder_refuses_bad_limits(cap: int, max_services: int) -> None:
    with pytest.raises(ValueError, match=">="):
        RouteFolder(cap=cap, max_services=max_services)
