"""Model scoring off the event loop: concurrent requests are micro-batched and run in one worker thread.

A request waits at most `max_wait_ms` for company (up to `max_batch` posts), so a lone post is scored at
once and a burst is scored in length-sorted batches. Each request has a timeout; on timeout or model error
the caller gets an exception and falls back to rules (see `bot.pipeline`).
"""
from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor

log = logging.getLogger("caveat.runner")


class ModelRunner:
    """Async front of a classifier with `predict(list[str]) -> list[dict]` and `version`."""

    def __init__(self, model, *, max_batch: int = 16, max_wait_ms: float = 2.0, timeout_s: float = 10.0):
        self.model = model
        self.version: str = model.version
        self.max_batch = max_batch
        self.max_wait = max_wait_ms / 1000
        self.timeout = timeout_s
        self._queue: asyncio.Queue | None = None
        self._worker: asyncio.Task | None = None
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="caveat-model")

    def _ensure_worker(self) -> asyncio.Queue:
        if self._worker is None or self._worker.done():
            self._queue = asyncio.Queue()
            self._worker = asyncio.get_running_loop().create_task(self._run(), name="caveat-model-runner")
        return self._queue

    async def score(self, text: str) -> dict[str, float]:
        """Probabilities per label for one text; raises TimeoutError or the model's error."""
        queue = self._ensure_worker()
        fut = asyncio.get_running_loop().create_future()
        await queue.put((text, fut))
        return await asyncio.wait_for(fut, self.timeout)

    async def score_many(self, texts: list[str], chunk: int = 256) -> list[dict[str, float]]:
        """Bulk scoring (replay, evaluation): big length-sorted batches in the worker thread."""
        loop = asyncio.get_running_loop()
        out: list[dict[str, float]] = []
        for start in range(0, len(texts), chunk):
            out.extend(await loop.run_in_executor(self._pool, self.model.predict, texts[start:start + chunk]))
        return out

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        queue = self._queue
        while True:
            first = await queue.get()
            batch = [first]
            deadline = loop.time() + self.max_wait
            while len(batch) < self.max_batch:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                try:
                    batch.append(await asyncio.wait_for(queue.get(), remaining))
                except asyncio.TimeoutError:
                    break
            live = [(t, f) for t, f in batch if not f.done()]
            if not live:
                continue
            try:
                results = await loop.run_in_executor(self._pool, self.model.predict, [t for t, _ in live])
            except Exception as exc:  # hand the failure to every waiting caller; keep serving
                log.warning("model batch of %d failed: %s", len(live), type(exc).__name__)
                for _, f in live:
                    if not f.done():
                        f.set_exception(exc)
                continue
            for (_, f), r in zip(live, results):
                if not f.done():
                    f.set_result(r)

    async def close(self) -> None:
        """Stop the worker task and its thread."""
        if self._worker is not None:
            self._worker.cancel()
            try:
                await self._worker
            except (asyncio.CancelledError, Exception):
                pass
            self._worker = None
        self._pool.shutdown(wait=False, cancel_futures=True)
