"""Model scoring off the event loop: one or more worker threads take posts as they arrive.

A worker that is free takes the next post at once (a lone post never waits for company); when posts queue up
behind busy workers, a worker takes everything queued, up to `max_batch` posts, in one call. `workers` defaults
to the scorer's thread count (ONNX Runtime: one post per call on one thread each) or 1 (torch, which
parallelises inside a call). Each request has a timeout; on timeout or model error the caller gets an exception
and falls back to rules (see `bot.pipeline`). `max_wait_ms` > 0 makes a worker wait that long for company
before scoring (the old micro-batching; measured slower for a lone post, see benchmarks/RESULTS.md).
"""
from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor

log = logging.getLogger("caveat.runner")


class ModelRunner:
    """Async front of a scorer with `predict(list[str]) -> list[dict]` and `version`."""

    def __init__(self, model, *, workers: int | None = None, max_batch: int = 16, max_wait_ms: float = 0.0,
                 timeout_s: float = 10.0):
        self.model = model
        self.version: str = model.version
        self.workers = max(1, workers or getattr(model, "threads", 1))
        self.max_batch = max_batch
        self.max_wait = max_wait_ms / 1000
        self.timeout = timeout_s
        # a worker's batch runs on its own thread, so a scorer's serial path avoids nesting thread pools
        self._predict = getattr(model, "predict_serial", model.predict)
        self._queue: asyncio.Queue | None = None
        self._tasks: list[asyncio.Task] = []
        self._pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="caveat-model")

    def _ensure_workers(self) -> asyncio.Queue:
        queue = self._queue
        if queue is None or not self._tasks or any(t.done() for t in self._tasks):
            for t in self._tasks:
                t.cancel()
            queue = self._queue = asyncio.Queue()
            loop = asyncio.get_running_loop()
            self._tasks = [loop.create_task(self._run(queue), name=f"caveat-model-runner-{i}")
                           for i in range(self.workers)]
        return queue

    def queue_depth(self) -> int:
        """Posts waiting for a free worker (for benchmarks and health checks)."""
        return self._queue.qsize() if self._queue is not None else 0

    async def score(self, text: str) -> dict[str, float]:
        """Probabilities per label for one text; raises TimeoutError or the model's error."""
        queue = self._ensure_workers()
        fut = asyncio.get_running_loop().create_future()
        queue.put_nowait((text, fut))
        return await asyncio.wait_for(fut, self.timeout)

    async def score_many(self, texts: list[str], chunk: int = 512) -> list[dict[str, float]]:
        """Bulk scoring (replay, evaluation): the scorer's own bulk path, in chunks, off the event loop."""
        loop = asyncio.get_running_loop()
        out: list[dict[str, float]] = []
        for start in range(0, len(texts), chunk):
            out.extend(await loop.run_in_executor(None, self.model.predict, texts[start:start + chunk]))
        return out

    async def _take(self, queue: asyncio.Queue) -> list:
        batch = [await queue.get()]
        if self.max_wait > 0:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + self.max_wait
            while len(batch) < self.max_batch:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                try:
                    batch.append(await asyncio.wait_for(queue.get(), remaining))
                except asyncio.TimeoutError:
                    break
        while len(batch) < self.max_batch and not queue.empty():
            batch.append(queue.get_nowait())
        return batch

    async def _run(self, queue: asyncio.Queue) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._take(queue)
            live = [(t, f) for t, f in batch if not f.done()]
            if not live:
                continue
            try:
                results = await loop.run_in_executor(self._pool, self._predict, [t for t, _ in live])
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
        """Stop the worker tasks and their threads."""
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            try:
                await t
            except (asyncio.CancelledError, Exception):
                pass
        self._tasks = []
        self._pool.shutdown(wait=False, cancel_futures=True)
