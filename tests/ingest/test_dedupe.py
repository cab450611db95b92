"""RecentBatches: a retried batch is caught within the window, memory stays bounded."""

from __future__ import annotations

from perfpulse.ingest.dedupe import RecentBatches


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_key_is_a_duplicate_until_the_window_passes() -> None:
    clock = Clock()
    recent = RecentBatches(window_s=60, clock=clock)
    assert recent.add("k:a") is True
    assert recent.add("k:a") is False
    clock.now += 59
    assert recent.add("k:b") is True
    assert recent.add("k:a") is False
    clock.now += 2  # a is 61 s old, b 2 s
    assert recent.add("k:c") is True
    assert "k:a" not in recent and "k:b" in recent
    assert recent.add("k:a") is True


def test_the_oldest_go_first_at_the_cap_and_memory_stays_bounded() -> None:
    recent = RecentBatches(max_entries=1000, clock=Clock())
    for i in range(50_000):
        assert recent.add(f"k:{i}")
    assert len(recent) == 1000
    assert "k:48999" not in recent and "k:49000" in recent and "k:49999" in recent
    assert len(recent._order) <= 2 * 1000


def test_a_discarded_key_is_forgotten_and_can_come_again() -> None:
    """What ingest does when the spool refused a batch: the retry must be stored.
    The entry left behind in the expiry order must not forget the new add early."""
    clock = Clock()
    recent = RecentBatches(window_s=60, max_entries=3, clock=clock)
    assert recent.add("k:a")
    recent.discard("k:a")
    assert "k:a" not in recent
    assert recent.add("k:a")  # the retry, at the same clock reading
    assert recent.add("k:b") and recent.add("k:c")
    assert "k:a" in recent  # three keys held: the stale entry forgot nothing
    assert recent.add("k:d")  # the cap: the oldest held key goes
    assert "k:a" not in recent
    assert all(k in recent for k in ("k:b", "k:c", "k:d"))
    for _ in range(10):  # discards leave no unbounded trail
        recent.discard("k:d")
        assert recent.add("k:d")
    assert len(recent._order) <= 2 * 3


def test_seeded_keys_are_duplicates_and_expire_like_added_ones() -> None:
    clock = Clock()
    recent = RecentBatches(window_s=60, clock=clock)
    recent.seed(["k:a", "k:b", "k:a"])
    assert recent.add("k:a") is False and recent.add("k:b") is False
    clock.now += 61
    assert recent.add("k:c") is True
    assert len(recent) == 1
