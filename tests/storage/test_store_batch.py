"""Store.batch: one transaction for many writes, rolled back as a whole on error."""
from __future__ import annotations

import pytest

from bot.engine import Post


def _post(i: int) -> Post:
    return Post("replay", f"m{i}", "c1", "u1", f"post number {i}")


async def test_batch_commits_once_at_the_end(store, database):
    from bot.storage import Store
    async with store.batch():
        for i in range(5):
            await store.upsert_post(_post(i))
        other = await Store.open(database)  # a second connection sees nothing until the commit
        try:
            assert (await other._one("SELECT count(*) AS n FROM posts"))["n"] == 0
        finally:
            await other.close()
    assert (await store._one("SELECT count(*) AS n FROM posts"))["n"] == 5


async def test_batch_rolls_back_on_error_and_the_store_keeps_working(store):
    with pytest.raises(RuntimeError):
        async with store.batch():
            await store.upsert_post(_post(1))
            raise RuntimeError("disk full")
    assert (await store._one("SELECT count(*) AS n FROM posts"))["n"] == 0
    post_id, new = await store.upsert_post(_post(1))
    assert new and (await store.post(post_id, community=""))["text"] == "post number 1"
