"""Scoring in worker processes (`caveat run --score-workers N`): when one process's cores are not enough.

Only the pure part of assessing a post runs in a worker: normalizing, the rules, the model and the Decision they
make. Storage and Discord stay in the bot's process, so a post is still stored once, in one transaction, by the
pipeline (bot.pipeline). Each worker is a process started with `spawn` (no inherited locks, sockets or event
loop) that loads the model once, scores one post at a time on one thread, never downloads anything
(HF_HUB_OFFLINE=1) and never logs post text: what it logs or reports about a failure is the post's key and an
exception's type.

The policy travels with the work: a post is sent with the key of the policy the pipeline holds (its version and
a hash of its content), and a worker that does not know that key gets the PolicySet itself with the post, so after `/caveat policy reload` the next post each
worker scores uses the new policy, and every Decision carries the policy_version and model_version it was made
with.

Worker death: each worker has a thread in the bot's process that sends it one job and waits for the answer. If
the worker dies (killed, out of memory, a crash in native code) or does not answer within `timeout_s`, the
thread kills what is left of it, puts the job back in the queue for another worker (the job was never answered,
so nothing was stored for it) and starts a fresh worker. A job whose worker died `max_failures` times is handed
back to the caller (WorkerUnavailable), and the pipeline scores that post in its own process, so a post is never
lost, and never stored twice because nothing is stored until a Decision comes back.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import copyreg
import hashlib
import io
import logging
import multiprocessing
import os
import pickle
import queue
import signal
import threading
import time
from dataclasses import dataclass, field, replace
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from types import MappingProxyType
from typing import Any, Callable

from bot import metrics
from bot.engine import Decision, Engine, Post
from bot.engine.engine import RULES_VERSION
from classifiers.normalize import clean_text
from classifiers.rules import truncation_notice

log = logging.getLogger("caveat.score_workers")

# What every worker's environment says, whatever the bot's says: nothing is downloaded, one thread per worker.
WORKER_ENV = {
    "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
}


class WorkerUnavailable(RuntimeError):
    """The workers could not score this job (its worker died `max_failures` times, or the pool is closed or
    cannot start workers): the caller scores it in its own process."""


class WorkerError(RuntimeError):
    """The worker answered, with an exception raised while scoring (its type only: never post text)."""


# ---------------------------------------------------------------------------------------------------------------
# Policy sets travel to workers pickled; their read-only mappings (MappingProxyType) need a reducer.

def _mapping_proxy(data: dict) -> MappingProxyType:
    return MappingProxyType(data)


def dumps_policy(policy) -> bytes:
    """A PolicySet as bytes (its read-only mappings become plain dicts wrapped again on load)."""
    buf = io.BytesIO()
    pickler = pickle.Pickler(buf, protocol=pickle.HIGHEST_PROTOCOL)
    pickler.dispatch_table = copyreg.dispatch_table.copy()
    pickler.dispatch_table[MappingProxyType] = lambda m: (_mapping_proxy, (dict(m),))
    pickler.dump(policy)
    return buf.getvalue()


# ---------------------------------------------------------------------------------------------------------------
# The worker process.

@dataclass
class WorkerState:
    """What a worker holds: the model (None: rules only) and the engines of the policies it was sent."""

    model: Any = None
    version: str = RULES_VERSION
    engines: dict[str, Engine] = field(default_factory=dict)

    def predict(self, texts: list[str]) -> list[dict[str, float]]:
        """Model probabilities for each text, one ONNX Runtime call per text on this thread."""
        return getattr(self.model, "predict_serial", self.model.predict)(list(texts))

    def decide(self, engine: Engine, post: Post) -> tuple[Decision, bool]:
        """What `Pipeline.decide` does in-process, minus the event loop: (decision, model_failed)."""
        text = clean_text(post.text)
        if text is not post.text:
            post = replace(post, text=text)
        model_failed = False
        if self.model is None:
            decision = engine.assess(post)
        else:
            try:
                scores = self.predict([engine.model_input(text)])[0]
            except Exception as exc:  # fail safe to rules + review, as in-process
                log.warning("model scoring failed for post %s: %s; using rules only", post.key, type(exc).__name__)
                model_failed = True
            if model_failed:
                decision = engine.assess(post, model_version=self.version, model_failed=True)
            else:
                decision = engine.assess(post, scores, model_version=self.version)
        notice = truncation_notice(text)
        return (replace(decision, why=f"{decision.why} {notice}") if notice else decision), model_failed


def _load_state(settings: dict) -> WorkerState:
    if settings.get("rules_only"):
        return WorkerState()
    from classifiers.serving import load_scorer
    # threads: ONNX Runtime's bulk threads, or torch's intra-op threads for the torch backend
    model = load_scorer(settings.get("model"), threads=settings.get("threads", 1))
    return WorkerState(model=model, version=model.version)


def worker_main(conn, settings: dict) -> None:
    """A worker's whole life: load once, then answer jobs until told to stop or the bot's end of the pipe closes."""
    os.environ.update(settings.get("env", WORKER_ENV))
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C stops the bot, which stops its workers
    from bot.logs import setup_logging
    setup_logging(json=settings.get("log_json", False), force=True)  # as the bot logs: text or JSON lines, no text
    try:
        state = _load_state(settings)
        hook = settings.get("hook")
        if hook is not None:
            hook(state)
    except BaseException as exc:  # noqa: BLE001 - reported to the bot, which refuses to start on it
        from classifiers.serving import one_line
        conn.send(("failed", f"{type(exc).__name__}: {one_line(exc)}"))
        return
    conn.send(("ready", os.getpid(), state.version))
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):  # the bot is gone
            return
        op = msg[0]
        if op == "stop":
            return
        result: Any
        try:
            if op == "decide":
                _, key, blob, post = msg
                if blob is not None:  # a policy this worker has not seen: keep it, drop older ones
                    state.engines = {key: Engine(pickle.loads(blob))}
                result = state.decide(state.engines[key], post)
            elif op == "predict":
                result = state.predict(msg[1])
            else:
                raise ValueError(f"unknown job {op!r}")
        except Exception as exc:  # the type only: an exception's message may quote the post
            log.warning("score worker pid %d: job %s failed: %s", os.getpid(), op, type(exc).__name__)
            conn.send(("error", type(exc).__name__))
            continue
        conn.send(("ok", result))


# ---------------------------------------------------------------------------------------------------------------
# The pool, in the bot's process.

@dataclass
class _Job:
    op: str                      # 'decide' | 'predict'
    payload: Any                 # a Post, or a list of texts
    policy: Any = None           # the PolicySet for 'decide'
    future: concurrent.futures.Future = field(default_factory=concurrent.futures.Future)
    failures: int = 0            # workers that died holding it


def _settle(future: concurrent.futures.Future, result=None, exc: BaseException | None = None) -> None:
    """Answer a job's future unless the caller gave up on it (cancelled)."""
    if future.done():
        return
    try:
        if exc is not None:
            future.set_exception(exc)
        else:
            future.set_result(result)
    except concurrent.futures.InvalidStateError:
        pass


class _Slot:
    """One worker process and the thread in the bot's process that feeds it."""

    def __init__(self, pool: ScoreWorkers, index: int):
        self.pool, self.index = pool, index
        self.proc: BaseProcess | None = None
        self.conn: Connection | None = None
        self.policy_key: str | None = None
        self.thread: threading.Thread | None = None
        self.start_failures = 0

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None and self.proc.is_alive() else None

    def spawn(self):
        """Start the process (not waiting for it)."""
        ctx = self.pool._ctx
        parent, child = ctx.Pipe()
        proc = ctx.Process(target=worker_main, args=(child, self.pool._settings),
                           name=f"caveat-score-worker-{self.index}", daemon=True)
        proc.start()
        child.close()  # the worker holds the only other end: its death reads as EOF here
        self.proc, self.conn, self.policy_key = proc, parent, None

    def wait_ready(self, timeout: float) -> str:
        """Wait for the worker to load; returns its model version (RuntimeError when it fails or is too slow)."""
        assert self.proc is not None and self.conn is not None
        try:
            if not self.conn.poll(timeout):
                raise RuntimeError(f"a score worker did not start within {timeout:g}s")
            msg = self.conn.recv()
        except (EOFError, OSError):
            self.proc.join(5)
            code = self.proc.exitcode
            self.kill()
            raise RuntimeError(f"a score worker died while starting (exit code {code})") from None
        except RuntimeError:
            self.kill()
            raise
        if msg[0] != "ready":
            self.kill()
            raise RuntimeError(f"a score worker could not start: {msg[1]}")
        return msg[2]

    def start(self) -> None:
        """Start a worker and wait until it has loaded the model."""
        self.spawn()
        version = self.wait_ready(self.pool.start_timeout_s)
        if version != self.pool.version:
            self.kill()
            raise RuntimeError(f"a score worker loaded model {version}, not {self.pool.version}")

    def kill(self) -> None:
        """Kill the process (SIGKILL) and close its pipe."""
        if self.proc is not None:
            if self.proc.is_alive():
                self.proc.kill()
            self.proc.join(5)
        if self.conn is not None:
            self.conn.close()
        self.proc, self.conn, self.policy_key = None, None, None

    def stop(self, timeout: float = 5.0) -> None:
        """Ask the worker to exit; kill it if it does not."""
        if self.proc is not None and self.conn is not None:
            try:
                self.conn.send(("stop",))
            except OSError:
                pass
            self.proc.join(timeout)
        self.kill()

    def run(self) -> None:
        """The feeding thread: one job at a time; a dead worker's job goes back in the queue, the worker restarts."""
        pool = self.pool
        while True:
            job = pool._jobs.get()
            if job is None:
                self.stop()
                return
            if job.future.done():  # the caller gave up (cancelled) before a worker took it
                continue
            if not self.ensure_process():
                pool._requeue(job)  # another worker takes it (or, when none is left, the bot itself)
                if self.start_failures >= pool.max_start_failures:
                    pool._slot_gave_up(self)
                    return
                time.sleep(min(5.0, 0.2 * 2 ** self.start_failures))
                continue
            try:
                answer = self._send(job)
            except (EOFError, OSError, pickle.PickleError) as exc:  # TimeoutError is an OSError
                self._died(job, exc)
                if not pool._closed:
                    self.ensure_process()  # rebuild now, not when the next post arrives
                continue
            if answer[0] == "ok":
                _settle(job.future, answer[1])
            else:
                _settle(job.future, exc=WorkerError(answer[1]))

    def ensure_process(self) -> bool:
        """A live worker, started if missing (or found dead while idle); False when it cannot start."""
        if self.proc is not None and self.proc.is_alive():
            return True
        if self.proc is not None:  # died between jobs (killed, out of memory): no job's fault
            log.warning("score worker %d (pid %s) died while idle; starting another", self.index, self.proc.pid)
            self.kill()
            self.pool._count("deaths")
        try:
            self.start()
        except Exception as exc:
            self.start_failures += 1
            log.error("score worker %d cannot start (%s)", self.index, exc)
            return False
        self.start_failures = 0
        self.pool._count("restarts")
        return True

    def _send(self, job: _Job):
        """Send one job and wait for its answer; EOFError/OSError when the worker dies, TimeoutError when slow."""
        conn = self.conn
        assert conn is not None
        key = None
        if job.op == "decide":  # the policy goes along the first time this worker sees it
            key, policy = self.pool._policy_entry(job.policy)
            blob = None if key == self.policy_key else policy
            self.policy_key = None  # unknown until the worker answers
            conn.send(("decide", key, blob, job.payload))
        else:
            conn.send((job.op, job.payload))
        if not conn.poll(self.pool.timeout_s):
            raise TimeoutError(f"no answer within {self.pool.timeout_s:g}s")
        answer = conn.recv()
        if key is not None and answer[0] == "ok":
            self.policy_key = key
        return answer

    def _died(self, job: _Job, exc: BaseException) -> None:
        pool = self.pool
        pid = self.proc.pid if self.proc is not None else None
        self.kill()
        pool._count("deaths")
        job.failures += 1
        what = "did not answer in time" if isinstance(exc, TimeoutError) else f"died ({type(exc).__name__})"
        key = job.payload.key if job.op == "decide" else f"{len(job.payload)} texts"
        if job.failures >= pool.max_failures:
            log.warning("score worker %d (pid %s) %s scoring %s; it failed %d times in workers: the bot scores it"
                        " itself", self.index, pid, what, key, job.failures)
            _settle(job.future, exc=WorkerUnavailable(f"{job.failures} workers died scoring it"))
        else:
            log.warning("score worker %d (pid %s) %s scoring %s; it is scored again", self.index, pid, what, key)
            pool._count("retries")
            pool._requeue(job)


class ScoreWorkers:
    """A pool of `n` scoring processes; `decide` and `score_many` are awaited from the bot's event loop.

    `model`: the trained model directory (None: the configured one); `rules_only`: workers load no model.
    `version`: the model version the bot's process scores with; a worker that loads another refuses to start.
    `hook`: a picklable callable run in each worker with its WorkerState after loading (tests, instrumentation).
    `timeout_s`: how long one worker may take over one job before it is killed (and the job tried again);
    `deadline_s`: how long the pipeline waits for a post in all (queueing included) before deciding it by rules
    with review, like the in-process model runner's timeout.
    """

    def __init__(self, n: int, *, model: str | None = None, rules_only: bool = False, version: str | None = None,
                 threads: int = 1, max_failures: int = 2, timeout_s: float = 10.0, deadline_s: float = 10.0,
                 start_timeout_s: float = 120.0, max_start_failures: int = 3, context: str = "spawn",
                 hook: Callable | None = None):
        if n < 1:
            raise ValueError("a pool needs at least one worker")
        self.n = n
        self.version = RULES_VERSION if rules_only else version
        self.max_failures = max(1, max_failures)
        self.timeout_s = timeout_s      # one worker's time for one job before it is killed and the job retried
        self.deadline_s = deadline_s    # a post's whole time in the pool (queue, retries), enforced by the pipeline
        self.start_timeout_s = start_timeout_s
        self.max_start_failures = max_start_failures
        self._ctx: Any = multiprocessing.get_context(context)  # spawn or forkserver
        from bot.logs import JsonFormatter
        log_json = any(isinstance(h.formatter, JsonFormatter) for h in logging.getLogger().handlers)
        self._settings = {"model": None if model is None else str(model), "rules_only": rules_only,
                          "threads": threads, "hook": hook, "log_json": log_json,
                          "env": {**WORKER_ENV, "CAVEAT_THREADS": str(threads)}}
        self._jobs: queue.Queue = queue.Queue()
        self._slots = [_Slot(self, i) for i in range(n)]
        self._live = 0
        self._lock = threading.Lock()
        self._policies: dict[int, tuple[Any, str, bytes]] = {}  # id -> (PolicySet, key, bytes)
        self._closed = False
        self._started = False
        self.stats = {"deaths": 0, "restarts": 0, "retries": 0}

    # -- life cycle -------------------------------------------------------------------------------------------

    def start(self) -> ScoreWorkers:
        """Start every worker and wait until each has loaded the model (blocking: seconds). Raises RuntimeError,
        with the reason, when a worker cannot start (then none is left running)."""
        for slot in self._slots:
            slot.spawn()
        try:
            versions = [slot.wait_ready(self.start_timeout_s) for slot in self._slots]
        except BaseException:
            for slot in self._slots:
                slot.kill()
            raise
        if self.version is None:
            self.version = versions[0]
        if any(v != self.version for v in versions):
            for slot in self._slots:
                slot.kill()
            raise RuntimeError(f"score workers loaded model {', '.join(sorted(set(versions)))}, not {self.version}")
        for slot in self._slots:
            slot.thread = threading.Thread(target=slot.run, name=f"caveat-score-feeder-{slot.index}", daemon=True)
            slot.thread.start()
        self._live = self.n
        self._started = True
        return self

    async def astart(self) -> ScoreWorkers:
        """`start` off the event loop."""
        return await asyncio.to_thread(self.start)

    def close(self, timeout: float = 10.0) -> None:
        """Stop the workers (each finishes its current job first); jobs still queued fail with WorkerUnavailable."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._fail_queued("the score workers are closed")
            for _ in self._slots:
                self._jobs.put(None)
        deadline = time.monotonic() + timeout
        for slot in self._slots:
            if slot.thread is not None:
                slot.thread.join(max(0.0, deadline - time.monotonic()))
        for slot in self._slots:
            slot.kill()
        self._fail_queued("the score workers are closed")

    async def aclose(self) -> None:
        """`close` off the event loop."""
        await asyncio.to_thread(self.close)

    # -- scoring ----------------------------------------------------------------------------------------------

    def pids(self) -> list[int]:
        """The process ids of the workers running now."""
        return [pid for pid in (s.pid for s in self._slots) if pid is not None]

    def queue_depth(self) -> int:
        """Jobs waiting for a free worker."""
        return self._jobs.qsize()

    def _submit(self, op: str, payload, policy=None) -> concurrent.futures.Future:
        job = _Job(op, payload, policy)
        with self._lock:
            if self._closed or not self._started or self._live == 0:
                raise WorkerUnavailable("no score worker is running")
            self._jobs.put(job)
        return job.future

    async def decide(self, post: Post, policy) -> tuple[Decision, bool]:
        """Assess `post` with `policy` in a worker: (decision, model_failed). Raises WorkerUnavailable when the
        workers cannot (the caller scores it itself) and WorkerError when scoring raised in the worker."""
        return await asyncio.wrap_future(self._submit("decide", post, policy))

    async def score_many(self, texts: list[str], chunk: int = 16, fallback=None) -> list[dict[str, float]]:
        """Model probabilities for many texts (replay), spread over the workers in chunks of `chunk` texts.

        `fallback`: a scorer with `score_many` (the bot's own) for a chunk the workers cannot score; without
        one, WorkerUnavailable is raised."""
        if self.version == RULES_VERSION:
            raise WorkerUnavailable("the score workers have no model")

        async def part(texts: list[str]) -> list[dict[str, float]]:
            try:
                return await asyncio.wrap_future(self._submit("predict", texts))
            except WorkerUnavailable:
                if fallback is None:
                    raise
                metrics.score_worker_fallback()
                return await fallback.score_many(texts)

        tasks = [asyncio.ensure_future(part(list(texts[i:i + chunk]))) for i in range(0, len(texts), chunk)]
        try:
            results = await asyncio.gather(*tasks)
        except BaseException:
            for t in tasks:
                t.cancel()
            raise
        return [row for rows in results for row in rows]

    # -- bookkeeping (feeder threads) -------------------------------------------------------------------------

    def _count(self, name: str) -> None:
        with self._lock:
            self.stats[name] += 1
        if name == "deaths":
            metrics.score_worker_died()

    def _policy_entry(self, policy) -> tuple[str, bytes]:
        """(key, pickled policy): the key names its exact content (version and a hash of the bytes), so a
        worker never keeps using an older PolicySet that happens to share a version string."""
        with self._lock:
            entry = self._policies.get(id(policy))
            if entry is None or entry[0] is not policy:
                blob = dumps_policy(policy)
                key = f"{policy.version}-{hashlib.sha256(blob).hexdigest()[:12]}"
                recent = list(self._policies.items())[-3:]  # the few held lately (a reload keeps the old one briefly)
                self._policies = dict(recent) | {id(policy): (policy, key, blob)}
                entry = self._policies[id(policy)]
            return entry[1], entry[2]

    def _requeue(self, job: _Job) -> None:
        """Back in the queue for the next free worker; answered WorkerUnavailable when no worker is left."""
        with self._lock:
            if not self._closed and self._live > 0:
                self._jobs.put(job)
                return
        _settle(job.future, exc=WorkerUnavailable("no score worker is running"))

    def _slot_gave_up(self, slot: _Slot) -> None:
        with self._lock:
            self._live -= 1
            live = self._live
            if live == 0:
                self._fail_queued("no score worker can start")
        log.error("score worker %d gave up after %d failed starts; %d worker(s) left", slot.index,
                  self.max_start_failures, live)

    def _fail_queued(self, reason: str) -> None:
        """Answer every queued job WorkerUnavailable (the caller holds the lock, or no feeder is left)."""
        while True:
            try:
                job = self._jobs.get_nowait()
            except queue.Empty:
                return
            if job is not None:
                _settle(job.future, exc=WorkerUnavailable(reason))


# ---------------------------------------------------------------------------------------------------------------
# The command line: `caveat run --score-workers N`, `caveat replay --score-workers N`.

def worker_count(value: str) -> int:
    """argparse type of --score-workers: a whole number, 0 (score in the bot's process) or more."""
    import argparse
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, got {value!r}") from None
    if n < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {n}")
    return n


def add_argument(parser) -> None:
    """Add --score-workers to a subcommand's parser."""
    parser.add_argument("--score-workers", type=worker_count, default=0, metavar="N",
                        help="score posts in N worker processes on this host (default 0: in this process); a post"
                             " whose worker dies is scored again")


async def start_from_args(args, scorer) -> ScoreWorkers | None:
    """The started pool that `--score-workers N` asks for, scoring with the same model as `scorer` (None: rules
    only); None for 0, or when the workers cannot start (a warning says why; scoring stays in this process)."""
    import sys
    n = getattr(args, "score_workers", 0) or 0
    if n <= 0:
        return None
    pool = ScoreWorkers(n, model=getattr(args, "model", None), rules_only=scorer is None,
                        version=None if scorer is None else scorer.version)
    try:
        return await pool.astart()
    except RuntimeError as exc:
        print(f"caveat: warning: score workers unavailable ({exc}); scoring in this process", file=sys.stderr)
        return None
