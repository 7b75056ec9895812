"""Prometheus metrics of one Caveat process, in the text exposition format (no client library needed).

What is counted (ids and counts only, never text):

- `caveat_posts_scored_total`: posts assessed by the pipeline;
- `caveat_actions_total{label,action}`: those decisions by label (`benign` when none) and action;
- `caveat_model_fallbacks_total`: posts the model failed on (error or timeout), decided by rules alone;
- `caveat_decision_seconds`: histogram of the time from a post's arrival to its stored decision;
- `caveat_queue_depth`: open review cases (replayed history left out), read from storage at scrape time;
- `caveat_model_up`: 1 when this process scores with the model, 0 when it runs on keyword rules only;
- `caveat_model_queue_depth`: posts waiting for a free model worker, at scrape time;
- `caveat_score_worker_deaths_total`: score worker processes (`--score-workers`) that died or hung;
- `caveat_score_worker_fallbacks_total`: posts the score workers could not score, scored in the bot's process.

The pipeline calls `observe_decision` and `model_fallback`; `render(store, scorer)` writes the page. `routes()`
serves `/metrics` and `/healthz` on an aiohttp app (the dashboard), and `start_ops_server()` serves the same two
on their own port for `caveat run`. Counters live in this process and start at zero when it starts.
"""
from __future__ import annotations

import math
import threading
from typing import TYPE_CHECKING, Callable, Iterable

if TYPE_CHECKING:
    from bot.storage.contract import Storage

DECISION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def _escape(value: str) -> str:
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(names: tuple[str, ...], values: tuple[str, ...], extra: str = "") -> str:
    parts = [f'{n}="{_escape(v)}"' for n, v in zip(names, values)]
    if extra:
        parts.append(extra)
    return "{" + ",".join(parts) + "}" if parts else ""


def _number(value: float) -> str:
    if value == math.inf:
        return "+Inf"
    if float(value).is_integer():
        return str(int(value))
    return repr(float(value))


class _Metric:
    kind = ""

    def __init__(self, name: str, help_text: str, labels: tuple[str, ...] = ()):
        self.name, self.help, self.label_names = name, help_text, tuple(labels)
        self._lock = threading.Lock()

    def _key(self, labels: dict[str, str]) -> tuple[str, ...]:
        if set(labels) != set(self.label_names):
            raise ValueError(f"{self.name} takes labels {self.label_names}, got {tuple(labels)}")
        return tuple(str(labels[n]) for n in self.label_names)

    def header(self) -> list[str]:
        return [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} {self.kind}"]


class Counter(_Metric):
    """A monotonically increasing count, optionally per label set."""

    kind = "counter"

    def __init__(self, name: str, help_text: str, labels: tuple[str, ...] = ()):
        super().__init__(name, help_text, labels)
        self._values: dict[tuple[str, ...], float] = {} if labels else {(): 0.0}

    def inc(self, amount: float = 1.0, **labels: str) -> None:
        if amount < 0:
            raise ValueError("a counter only goes up")
        key = self._key(labels)
        with self._lock:
            self._values[key] = self._values.get(key, 0.0) + amount

    def value(self, **labels: str) -> float:
        return self._values.get(self._key(labels), 0.0)

    def lines(self) -> list[str]:
        with self._lock:
            items = sorted(self._values.items())
        return self.header() + [f"{self.name}{_labels(self.label_names, k)} {_number(v)}" for k, v in items]


class Histogram(_Metric):
    """Observations counted into cumulative `le` buckets, with their sum and count."""

    kind = "histogram"

    def __init__(self, name: str, help_text: str, buckets: Iterable[float] = DECISION_BUCKETS):
        super().__init__(name, help_text)
        self.buckets = tuple(sorted(float(b) for b in buckets)) + (math.inf,)
        self._counts = [0] * len(self.buckets)
        self._sum = 0.0

    def observe(self, value: float) -> None:
        with self._lock:
            self._sum += value
            for i, bound in enumerate(self.buckets):
                if value <= bound:
                    self._counts[i] += 1
                    break

    @property
    def count(self) -> int:
        return sum(self._counts)

    def lines(self) -> list[str]:
        with self._lock:
            counts, total = list(self._counts), self._sum
        out, running = self.header(), 0
        for bound, n in zip(self.buckets, counts):
            running += n
            out.append(f'{self.name}_bucket{{le="{_number(bound)}"}} {running}')
        out.append(f"{self.name}_sum {repr(total)}")
        out.append(f"{self.name}_count {running}")
        return out


def gauge_lines(name: str, help_text: str, value: float | None) -> list[str]:
    """A gauge read at scrape time; None (could not be read) writes no sample, only its help."""
    out = [f"# HELP {name} {help_text}", f"# TYPE {name} gauge"]
    if value is not None:
        out.append(f"{name} {_number(value)}")
    return out


POSTS_SCORED = Counter("caveat_posts_scored_total", "Posts assessed by the pipeline.")
ACTIONS = Counter("caveat_actions_total", "Decisions by label (benign when none) and action.", ("label", "action"))
MODEL_FALLBACKS = Counter("caveat_model_fallbacks_total",
                          "Posts decided by keyword rules alone because the model failed or timed out.")
DECISION_SECONDS = Histogram("caveat_decision_seconds", "Seconds from a post's arrival to its stored decision.")
WORKER_DEATHS = Counter("caveat_score_worker_deaths_total",
                        "Score worker processes that died or stopped answering (each is replaced).")
WORKER_FALLBACKS = Counter("caveat_score_worker_fallbacks_total",
                           "Posts the score workers could not score, scored in the bot's own process instead.")
METRICS = (POSTS_SCORED, ACTIONS, MODEL_FALLBACKS, DECISION_SECONDS, WORKER_DEATHS, WORKER_FALLBACKS)


def observe_decision(decision, seconds: float) -> None:
    """Count one assessed post: its labels and action, and how long the decision took."""
    POSTS_SCORED.inc()
    for label in decision.labels or ("benign",):
        ACTIONS.inc(label=label, action=decision.action)
    DECISION_SECONDS.observe(seconds)


def model_fallback() -> None:
    """Count one post whose model scoring failed (the pipeline decided it by rules)."""
    MODEL_FALLBACKS.inc()


def score_worker_died() -> None:
    """Count one score worker that died or hung (its post was scored again)."""
    WORKER_DEATHS.inc()


def score_worker_fallback() -> None:
    """Count one post scored in the bot's process because the score workers could not."""
    WORKER_FALLBACKS.inc()


async def queue_depth(store: Storage) -> int:
    """Open review cases (open or claimed, replayed history left out) over every community."""
    total = 0
    for community in await store.communities():
        total += await store.count_cases(community=community)
    return total


async def render(store: Storage | None = None, scorer=None) -> str:
    """The metrics page in Prometheus text format 0.0.4."""
    lines: list[str] = []
    for metric in METRICS:
        lines += metric.lines()
    depth = None
    if store is not None:
        try:
            depth = await queue_depth(store)
        except Exception:  # a database problem shows on /healthz; the counters are still worth scraping
            depth = None
    lines += gauge_lines("caveat_queue_depth", "Open review cases (replayed history left out).", depth)
    lines += gauge_lines("caveat_model_up", "1 when posts are scored with the model, 0 on keyword rules only.",
                         0 if scorer is None else 1)
    waiting = getattr(scorer, "queue_depth", None)
    lines += gauge_lines("caveat_model_queue_depth", "Posts waiting for a free model worker.",
                         waiting() if callable(waiting) else 0)
    return "\n".join(lines) + "\n"


CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def routes(store: Storage, scorer: Callable[[], object] = lambda: None) -> list:
    """aiohttp routes for GET /metrics and GET /healthz (`scorer()` gives the process's scorer or None)."""
    from aiohttp import web

    from bot.health import check_live

    async def metrics_page(request: web.Request) -> web.Response:
        body = await render(store, scorer())
        return web.Response(body=body.encode("utf-8"), headers={"Content-Type": CONTENT_TYPE})

    async def healthz(request: web.Request) -> web.Response:
        report = await check_live(store, scorer())
        return web.json_response(report, status=200 if report["ok"] else 503)

    return [web.get("/metrics", metrics_page), web.get("/healthz", healthz)]


async def start_ops_server(store: Storage, host: str, port: int, scorer=None):
    """Serve /healthz and /metrics on host:port (for `caveat run`); returns the aiohttp runner to `cleanup()`."""
    from aiohttp import web

    app = web.Application()
    app.add_routes(routes(store, lambda: scorer))
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
    except BaseException:
        await runner.cleanup()
        raise
    return runner
