"""BoundedLRU: the one bounded map behind the "most recent N" caches and stores."""

import threading

import numpy as np
import pytest

from msagent._lru import BoundedLRU


def test_drops_the_least_recently_used_and_get_counts_as_a_use():
    lru = BoundedLRU(2)
    lru.put("a", 1)
    lru.put("b", 2)
    assert lru.get("a") == 1  # "b" is now the least recently used
    assert lru.put("c", 3) == [("b", 2)]
    assert lru.keys() == ["a", "c"] and "b" not in lru and len(lru) == 2


def test_peek_does_not_count_as_a_use_so_a_store_can_be_first_in_first_out():
    lru = BoundedLRU(2)
    lru.put("a", 1)
    lru.put("b", 2)
    assert lru.peek("a") == 1
    lru.put("c", 3)
    assert lru.keys() == ["b", "c"] and lru.peek("a", "gone") == "gone"


def test_put_replaces_and_add_keeps_the_first_value():
    lru = BoundedLRU(3)
    lru.put("a", 1)
    lru.put("a", 2)
    assert lru.get("a") == 2 and len(lru) == 1
    assert lru.add("a", 3) is False and lru.get("a") == 2
    assert lru.add("b", 4) is True and lru.get("b") == 4


def test_weight_bound_drops_old_entries_but_keeps_the_newest():
    lru = BoundedLRU(10, weigh=lambda array: array.nbytes, max_weight=250)
    lru.put("a", np.zeros(100, np.uint8))
    lru.put("b", np.zeros(100, np.uint8))
    assert lru.weight == 200
    lru.put("c", np.zeros(100, np.uint8))
    assert lru.keys() == ["b", "c"] and lru.weight == 200
    lru.put("huge", np.zeros(1000, np.uint8))  # over the bound alone: still kept
    assert lru.keys() == ["huge"] and lru.weight == 1000
    assert lru.pop("huge").nbytes == 1000 and lru.weight == 0 and lru.pop("huge") is None


def test_maxsize_zero_keeps_nothing_and_weigh_needs_a_bound():
    lru = BoundedLRU(0)
    assert lru.put("a", 1) == [("a", 1)] and len(lru) == 0
    with pytest.raises(ValueError):
        BoundedLRU(2, weigh=len)


def test_concurrent_puts_keep_the_bound():
    lru = BoundedLRU(50)

    def work(offset):
        for i in range(500):
            lru.put((offset, i), i)
            lru.get((offset, i - 1))

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(lru) == 50


def test_it_reads_as_a_mapping_without_counting_uses():
    lru = BoundedLRU(2)
    lru.put("a", 1)
    lru.put("b", 2)
    assert lru == {"a": 1, "b": 2} and lru["a"] == 1 and list(lru) == ["a", "b"]
    with pytest.raises(KeyError):
        lru["c"]


def test_get_or_compute_is_single_flight_and_counts_hits_and_misses():
    lru, calls, started = BoundedLRU(4), [], threading.Event()
    release = threading.Event()

    def compute():
        calls.append(1)
        started.set()
        release.wait(5)
        return "value"

    results = []
    first = threading.Thread(target=lambda: results.append(lru.get_or_compute("k", compute)))
    first.start()
    started.wait(5)
    others = [threading.Thread(target=lambda: results.append(lru.get_or_compute("k", compute)))
              for _ in range(4)]
    for thread in others:
        thread.start()
    release.set()
    for thread in [first, *others]:
        thread.join(5)
    assert results == ["value"] * 5 and len(calls) == 1
    assert (lru.misses, lru.hits) == (1, 4)


def test_a_failed_compute_stores_nothing_and_the_next_caller_tries_again():
    lru = BoundedLRU(4)

    def broken():
        raise RuntimeError("encoder failed")

    with pytest.raises(RuntimeError):
        lru.get_or_compute("k", broken)
    assert "k" not in lru and lru.get_or_compute("k", lambda: 7) == 7 and lru.misses == 2


def test_get_or_compute_many_computes_only_the_misses_in_one_call():
    lru, batches = BoundedLRU(8), []
    lru.get_or_compute("a", lambda: "A")

    def compute_many(keys):
        batches.append(list(keys))
        return [key.upper() for key in keys]

    assert lru.get_or_compute_many(["a", "b", "c", "b"], compute_many) == ["A", "B", "C", "B"]
    assert batches == [["b", "c"]] and lru.hits == 1 and lru.misses == 3


def test_maxsize_zero_computes_every_time_and_keeps_nothing():
    lru = BoundedLRU(0)
    assert lru.get_or_compute("k", lambda: 1) == 1 and len(lru) == 0
    assert lru.get_or_compute("k", lambda: 2) == 2 and lru.misses == 2
