"""Claims and batch replies: each queued command hands back its own reply, whatever else is queued."""

from __future__ import annotations

from typing import Any

import pytest

from hub.storage.batch import Batch
from hub.storage.incidents import IncidentStore


async def test_each_command_gets_its_reply_once_the_batch_ran(redis: Any) -> None:
    p = Batch()
    written = p.hset("h", mapping={"a": "1"})
    ttl = p.expire("h", 100)
    read = p.hget("h", "a")
    assert not read.done
    await p.execute(redis)
    assert (written.value, ttl.value, read.value) == (1, None, b"1")
    assert read.done


async def test_a_claim_says_its_owner_wherever_it_sits_in_the_batch(redis: Any) -> None:
    incidents = IncidentStore(redis, 3600)
    first = Batch()
    mine = incidents.claim_into(first, "subject-1", "page", "ev_1")
    with pytest.raises(RuntimeError):
        _ = mine.value  # not run yet
    await first.execute(redis)
    second = Batch()
    second.hset("unrelated", mapping={"x": 1})  # other writes before and after: positions move
    theirs = incidents.claim_into(second, "subject-1", "page", "ev_2")
    other = incidents.claim_into(second, "subject-1", "notify", "ev_2")
    incidents.note_into(second, "subject-1", {"type": "test"})
    await second.execute(redis)
    assert (mine.value, theirs.value, other.value) == ("ev_1", "ev_1", "ev_2")
    third = Batch()
    late = incidents.claim_into(third, "subject-1", "page", "ev_3")
    await third.execute(redis)
    assert late.value == "ev_1"
