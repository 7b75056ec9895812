"""`caveat replay`: score a whole channel history into shadow cases and summarize what Caveat would have done."""
from __future__ import annotations

import hashlib
import json
import sys
from collections import Counter
from dataclasses import replace
from datetime import datetime
from pathlib import Path

from bot.engine import Post
from classifiers.jsonl import decode_utf8, json_kind, read_text_rows, row_id
from classifiers.normalize import clean_text
from bot.pipeline import Pipeline
from bot.score_workers import ScoreWorkers, start_from_args
from bot.storage import Store, default_db_path
from bot.storage.postgres import redact_url
from policies.schema import LABELS


def load_export(path: str, community: str | None = None) -> list[Post]:
    """Posts from a DiscordChatExporter JSON export or JSON lines; raises ValueError naming file and line.

    `community`: the server the history belongs to (default: the export's guild id, or 'replay').

    Every problem is a ValueError that names the file and the line (JSON lines) or the message
    (`messages[3].content`): bytes that are not UTF-8, invalid JSON, a field of the wrong type, an
    unreadable timestamp, and an id used twice in one file (both places are named). A JSON line without
    an id gets one hashed from its channel, author, timestamp and text (and how many identical rows came
    before it in the file), so replaying the same file twice skips what was stored while two different
    posts never share an id. Lone surrogates in text become U+FFFD."""
    posts = _load(path)
    if community is not None:
        return [replace(p, community_id=community) for p in posts]
    return [p if p.community_id else replace(p, community_id="replay") for p in posts]


def _load(path: str) -> list[Post]:
    raw = decode_utf8(Path(path).read_bytes(), path)
    stripped = raw.lstrip()
    if stripped.startswith("{") and '"messages"' in raw[:100_000]:
        try:
            data = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}:{exc.lineno}: not valid JSON ({exc.msg})") from None
        except (ValueError, RecursionError) as exc:
            raise ValueError(f"{path}: not valid JSON ({exc})") from None
        return _from_exporter(data, path)
    posts = []
    seen: dict[str, int] = {}      # message id -> line
    repeats: Counter = Counter()   # content digest -> rows with that content so far (for hashed ids)
    for n, row in read_text_rows(raw.split("\n"), path):
        explicit = row_id(row, path, n)
        channel = _id_field(row, "channel", f"{path}:{n}")
        author = _id_field(row, "author", f"{path}:{n}")
        timestamp = _time(row.get("timestamp"), f"{path}:{n}: 'timestamp'")
        if explicit is not None:
            message_id = str(explicit)
        else:
            content = json.dumps([channel, author, row.get("timestamp"), row["text"]], ensure_ascii=False)
            digest = hashlib.sha256(content.encode("utf-8")).hexdigest()
            message_id = content_id(digest, repeats[digest])
            repeats[digest] += 1
        if message_id in seen:
            raise ValueError(f"{path}:{n}: id {message_id!r} was already used on line {seen[message_id]};"
                             " ids must be unique in a file (or leave them out: each row then gets one hashed"
                             " from its content)")
        seen[message_id] = n
        posts.append(Post(platform="replay", message_id=message_id, channel_id=channel or "replay",
                          author_id=author or "unknown", text=row["text"], created_at=timestamp))
    return posts


def content_id(digest: str, occurrence: int = 0) -> str:
    """A stable message id for a JSON line without one, from the sha256 `digest` of its content (channel, author,
    timestamp, text as JSON) and how many rows with the same content came before it in the file."""
    if occurrence:
        digest = hashlib.sha256(f"{occurrence}\n{digest}".encode("ascii")).hexdigest()
    return f"sha256-{digest[:32]}"


def _id_field(row: dict, key: str, where: str) -> str | None:
    """An optional id-like field (string or integer) as a string."""
    value = row.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise ValueError(f"{where}: '{key}' must be a string or an integer, not {json_kind(value)}")
    return clean_text(str(value))


def _from_exporter(data, path: str) -> list[Post]:
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a DiscordChatExporter export is a JSON object, not {json_kind(data)}")
    channel = _object(data, "channel", path)
    guild = _object(data, "guild", path)
    messages = data.get("messages")
    if messages is None:
        messages = []
    if not isinstance(messages, list):
        raise ValueError(f"{path}: 'messages' must be a list, not {json_kind(messages)}")
    channel_id = _id_field(channel, "id", f"{path}: channel") or "export"
    channel_name = _text_field(channel, "name", f"{path}: channel")
    guild_id = _id_field(guild, "id", f"{path}: guild") or ""
    posts = []
    seen: dict[str, int] = {}
    for i, m in enumerate(messages):
        where = f"{path}: messages[{i}]"
        if not isinstance(m, dict):
            raise ValueError(f"{where} must be an object, not {json_kind(m)}")
        if "id" not in m:
            raise ValueError(f"{path}: messages[{i}] has no id")
        message_id = _id_field(m, "id", where)
        if not message_id:
            raise ValueError(f"{where}.id must be a non-empty string or an integer")
        if message_id in seen:
            raise ValueError(f"{where}: id {message_id!r} was already used by messages[{seen[message_id]}]")
        seen[message_id] = i
        author = _object(m, "author", where)
        is_bot = author.get("isBot")
        if is_bot is not None and not isinstance(is_bot, bool):
            raise ValueError(f"{where}.author.isBot must be true or false, not {json_kind(is_bot)}")
        content = m.get("content")
        if content is not None and not isinstance(content, str):
            raise ValueError(f"{where}.content must be a string, not {json_kind(content)}")
        author_id = _id_field(author, "id", f"{where}.author") or "unknown"
        author_name = _text_field(author, "name", f"{where}.author")
        created_at = _time(m.get("timestamp"), f"{where}.timestamp")
        if is_bot or content is None or not content.strip():
            continue
        posts.append(Post(platform="discord", message_id=message_id, channel_id=channel_id,
                          channel_name=channel_name, community_id=guild_id, author_id=author_id,
                          author_name=author_name, text=clean_text(content), created_at=created_at))
    return posts


def _object(parent: dict, key: str, where: str) -> dict:
    """An optional nested object ({} when missing or null)."""
    value = parent.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValueError(f"{where}: '{key}' must be an object, not {json_kind(value)}")
    return value


def _text_field(parent: dict, key: str, where: str) -> str:
    """An optional string field ('' when missing or null), lone surrogates replaced."""
    value = parent.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ValueError(f"{where}.{key} must be a string, not {json_kind(value)}")
    return clean_text(value)


def _time(value, where: str = "timestamp") -> datetime | None:
    """An optional ISO 8601 time; ValueError naming `where` when it is not one."""
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ValueError(f"{where} must be an ISO 8601 time string, not {json_kind(value)}")
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"{where} is not an ISO 8601 time") from None


async def replay(args, policy, scorer) -> int:
    """Run every post of the export through the pipeline in shadow mode and print a summary table."""
    try:
        posts = load_export(args.export, getattr(args, "community", None))
    except ValueError as exc:
        print(f"caveat: {exc}", file=sys.stderr)
        return 2
    except FileNotFoundError:
        raise  # `caveat` says "file not found"
    except OSError as exc:
        print(f"caveat: cannot read {args.export}: {exc.strerror or type(exc).__name__}", file=sys.stderr)
        return 2
    store = await Store.open(args.db or default_db_path())
    workers = None
    table: Counter = Counter()
    duplicates = 0
    try:
        workers = await start_from_args(args, scorer)  # --score-workers N: the model runs in N processes
        bulk = _WorkerBulk(workers, scorer) if workers is not None and scorer is not None else scorer
        pipeline = Pipeline(store, policy, scorer, workers=workers)
        from tqdm import tqdm
        with tqdm(total=len(posts), desc="replay", unit="post", disable=args.no_progress, file=sys.stderr) as bar:
            async for chunk, scores in _scored_chunks(posts, bulk, CHUNK, pipeline.engine.model_input):
                async with store.batch():  # one transaction per chunk; a rerun skips what was stored
                    for post, post_scores in zip(chunk, scores):
                        outcome = await pipeline.handle(post, replayed=True, scores=post_scores)
                        d = outcome.decision
                        if outcome.duplicate or d is None:  # a duplicate carries no new decision
                            duplicates += 1
                            continue
                        for label in d.labels or ("benign",):
                            table[(label, d.action)] += 1
                bar.update(len(chunk))
    finally:
        await store.close()
        if workers is not None:
            await workers.aclose()
        if scorer:
            await scorer.close()
    print(summary_table(table, len(posts), duplicates))
    communities = ", ".join(sorted({p.community_id for p in posts})) or "none"
    print(f"\nDecisions stored as replayed cases (community {communities}) in {redact_url(str(args.db or default_db_path()))}."
          " Nothing was posted; the queue hides them unless asked ('include replayed history'), and"
          " `/caveat clear-replayed` or the dashboard closes them all.")
    return 0


class _WorkerBulk:
    """Bulk scoring in the score workers; a part they cannot score is scored by `scorer` in this process."""

    def __init__(self, workers: ScoreWorkers, scorer):
        self.workers, self.scorer = workers, scorer

    async def score_many(self, texts: list[str]) -> list[dict[str, float]]:
        return await self.workers.score_many(texts, fallback=self.scorer)


CHUNK = 128  # posts per transaction: short enough that the live bot never waits long for the write lock


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
    if not chunks:
        return
    pending = asyncio.ensure_future(score(chunks[0]))
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
