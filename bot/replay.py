"""`caveat replay`: score a whole channel history into shadow cases and summarize what Caveat would have done."""
from __future__ import annotations

import json
import sys
from collections import Counter
from dataclasses import replace
from datetime import datetime
from pathlib import Path

from bot.engine import Post
from classifiers.jsonl import read_text_rows
from bot.pipeline import Pipeline
from bot.storage import Store, default_db_path
from policies.schema import LABELS


def load_export(path: str, community: str | None = None) -> list[Post]:
    """Posts from a DiscordChatExporter JSON export or JSON lines; raises ValueError naming file and line.

    `community`: the server the history belongs to (default: the export's guild id, or 'replay')."""
    posts = _load(path)
    if community is not None:
        return [replace(p, community_id=community) for p in posts]
    return [p if p.community_id else replace(p, community_id="replay") for p in posts]


def _load(path: str) -> list[Post]:
    raw = Path(path).read_text(encoding="utf-8")
    stripped = raw.lstrip()
    if stripped.startswith("{") and '"messages"' in raw[:100_000]:
        try:
            data = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}:{exc.lineno}: not valid JSON ({exc.msg})") from None
        return _from_exporter(data, path)
    posts = []
    for n, row in read_text_rows(raw.splitlines(), path):
        posts.append(Post(platform="replay", message_id=str(row.get("id", n)), channel_id=str(row.get("channel", "replay")),
                          author_id=str(row.get("author", "unknown")), text=row["text"],
                          created_at=_time(row.get("timestamp"))))
    return posts


def _from_exporter(data: dict, path: str) -> list[Post]:
    channel = data.get("channel") or {}
    guild = data.get("guild") or {}
    posts = []
    for i, m in enumerate(data.get("messages") or []):
        if not isinstance(m, dict) or "id" not in m:
            raise ValueError(f"{path}: messages[{i}] has no id")
        author = m.get("author") or {}
        if author.get("isBot") or not (m.get("content") or "").strip():
            continue
        posts.append(Post(platform="discord", message_id=str(m["id"]), channel_id=str(channel.get("id", "export")),
                          channel_name=channel.get("name", ""), community_id=str(guild.get("id", "")),
                          author_id=str(author.get("id", "unknown")), author_name=author.get("name", ""),
                          text=m["content"], created_at=_time(m.get("timestamp"))))
    return posts


def _time(value) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None


async def replay(args, policy, scorer) -> int:
    """Run every post of the export through the pipeline in shadow mode and print a summary table."""
    try:
        posts = load_export(args.export, getattr(args, "community", None))
    except ValueError as exc:
        print(f"caveat: {exc}", file=sys.stderr)
        return 2
    store = await Store.open(args.db or default_db_path())
    pipeline = Pipeline(store, policy, scorer)
    table: Counter = Counter()
    duplicates = 0
    try:
        from tqdm import tqdm
        with tqdm(total=len(posts), desc="replay", unit="post", disable=args.no_progress, file=sys.stderr) as bar:
            async for chunk, scores in _scored_chunks(posts, scorer, CHUNK, pipeline.engine.model_input):
                async with store.batch():  # one transaction per chunk; a rerun skips what was stored
                    for post, post_scores in zip(chunk, scores):
                        outcome = await pipeline.handle(post, replayed=True, scores=post_scores)
                        if outcome.duplicate:
                            duplicates += 1
                            continue
                        d = outcome.decision
                        for label in d.labels or ("benign",):
                            table[(label, d.action)] += 1
                bar.update(len(chunk))
    finally:
        await store.close()
        if scorer:
            await scorer.close()
    print(summary_table(table, len(posts), duplicates))
    communities = ", ".join(sorted({p.community_id for p in posts})) or "none"
    print(f"\nDecisions stored as replayed cases (community {communities}) in {args.db or default_db_path()}."
          " Nothing was posted; the queue hides them unless asked ('include replayed history'), and"
          " `/caveat clear-replayed` or the dashboard closes them all.")
    return 0


CHUNK = 512


async def _scored_chunks(posts: list[Post], scorer, size: int, model_input=lambda t: t):
    """Chunks of posts with their model scores; the next chunk is scored while the current one is written.

    Scores are None when there is no model or bulk scoring failed (then each post falls back on its own).
    """
    import asyncio

    async def score(chunk):
        if scorer is None:
            return [None] * len(chunk)
        try:
            return await scorer.score_many([model_input(p.text) for p in chunk])
        except Exception as exc:  # the per-post path retries and falls back to rules if the model is down
            print(f"caveat: bulk scoring failed ({type(exc).__name__}); scoring posts one by one", file=sys.stderr)
            return [None] * len(chunk)

    chunks = [posts[i:i + size] for i in range(0, len(posts), size)]
    pending = asyncio.ensure_future(score(chunks[0])) if chunks else None
    for i, chunk in enumerate(chunks):
        scores = await pending
        if i + 1 < len(chunks):
            pending = asyncio.ensure_future(score(chunks[i + 1]))
        yield chunk, scores


def summary_table(table: Counter, total: int, duplicates: int) -> str:
    """Rows per label, columns per action: what Caveat would have done."""
    actions = ["none", "note", "queue", "note_and_queue", "escalate"]
    rows = [("label", *actions)]
    for label in (*LABELS, "benign"):
        rows.append((label, *(str(table.get((label, a), 0)) for a in actions)))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines.append(f"\n{total} posts read, {total - duplicates} scored, {duplicates} already stored (skipped)")
    return "\n".join(lines)
