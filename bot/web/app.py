"""`caveat serve`: the moderators' dashboard and the sandbox channel, on the same storage as the Discord bot."""
from __future__ import annotations

import asyncio
import ipaddress
import logging
import sys
from importlib import resources

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

from bot import metrics
from bot.pipeline import Pipeline
from bot.policy_sync import PolicySync
from bot.storage import Store, default_db_path
from bot.storage.contract import Storage
from bot.storage.postgres import redact_url
from bot.web import auth, cases, reports, sandbox, settings, thresholds
from bot.web.keys import AUTH, PIPELINE, POLICY_DIR, POLICY_SYNC, STORE
from policies.loader import PolicySet, load_policy, warn_once

log = logging.getLogger("caveat.web")


def is_loopback(host: str) -> bool:
    """Is `host` this machine only (127.0.0.0/8, ::1 or localhost)?"""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def bind_problem(host: str, allow_remote: bool) -> str | None:
    """Why binding `host` is refused, or None when it is allowed."""
    if is_loopback(host):
        return None
    if not allow_remote:
        return f"--host {host} is reachable from other machines; add --allow-remote to mean it (and put HTTPS in front)"
    return None


class AccessLog(AbstractAccessLogger):
    """One line per request: method, path, status, time. One-time login tokens in paths are masked."""

    def log(self, request, response, time: float) -> None:
        path = request.path
        if path.startswith("/login/link/"):
            path = "/login/link/<token>"
        self.logger.info("%s %s %s %.3fs", request.method, path, response.status, time)


async def _root(request: web.Request) -> web.Response:
    raise web.HTTPFound("/queue")


def build_app(store: Storage, pipeline: Pipeline, policy_dir: str, *, secure_cookies: bool = False,
              policy_sync=None) -> web.Application:
    """The aiohttp application with every page; services are injected, nothing global."""
    app = web.Application(middlewares=[auth.security_middleware], client_max_size=256 * 1024)
    app[STORE] = store
    app[PIPELINE] = pipeline
    app[POLICY_DIR] = str(policy_dir)
    if policy_sync is not None:
        app[POLICY_SYNC] = policy_sync
    app[AUTH] = auth.Auth(store, secure_cookies=secure_cookies)
    r = app.router
    r.add_get("/", _root)
    r.add_get("/login", auth.login_page)
    r.add_post("/login", auth.login_submit)
    r.add_post("/logout", auth.logout)
    r.add_get(r"/login/link/{token}", auth.link_page)
    r.add_post(r"/login/link/{token}", auth.link_submit)
    r.add_post("/community", auth.switch_community)
    r.add_post("/queue/clear-replayed", cases.clear_replayed)
    r.add_get("/sandbox", sandbox.sandbox_page)
    r.add_post("/sandbox/post", sandbox.sandbox_submit)
    r.add_get("/queue", cases.queue_page)
    r.add_get(r"/case/{case_id}", cases.case_page)
    r.add_post(r"/case/{case_id}/{action}", cases.case_action)
    r.add_get("/audit", reports.audit_page)
    r.add_get("/audit.csv", reports.audit_csv)
    r.add_get("/stats", reports.stats_page)
    r.add_get("/settings", settings.settings_page)
    r.add_post("/settings", settings.settings_submit)
    r.add_get("/thresholds", thresholds.thresholds_page)
    r.add_post("/thresholds", thresholds.thresholds_submit)
    r.add_get("/thresholds/simulate", thresholds.simulate_json)
    r.add_static("/static/", str(resources.files("bot.web") / "static"), append_version=False)
    # Operations: Prometheus metrics and the health check (public: no session; counts and ids only, never text).
    app.add_routes(metrics.routes(store, lambda: pipeline.scorer))
    return app


def _load_scorer(args):
    """The model runner, or None (rules only) when asked or when no model can be loaded."""
    if args.rules_only:
        return None
    from classifiers.serving import ModelUnavailable, load_default_classifier
    try:
        return load_default_classifier(args.model)
    except ModelUnavailable as exc:
        print(f"caveat: model unavailable ({exc}); serving with keyword rules only", file=sys.stderr)
        return None


async def serve(args, policy: PolicySet, scorer, *, ready: asyncio.Event | None = None) -> int:
    """Open storage, print the login token on first start, seed the sandbox, and serve until cancelled."""
    db = args.db or default_db_path()
    store = await Store.open(db)
    runner = sync_task = None
    try:
        token = await auth.ensure_token(store, renew=args.new_token)
        if token:
            # Printed once, never logged: only its hash is stored.
            print(f"Operator login token (shown once; keep it somewhere safe): {token}", flush=True)
        pipeline = Pipeline(store, policy, scorer)
        # One policy for every process on this database: follow what the bot publishes, publish threshold saves.
        sync = PolicySync(store, lambda: pipeline.policy, pipeline.set_policy)
        print(await sync.start(), flush=True)
        sync_task = asyncio.create_task(sync.run(), name="caveat-policy-sync")
        if not args.no_seed and await sandbox.seed(pipeline):
            print(f"Added {len(sandbox.SEED)} example posts to the sandbox channel.", flush=True)
        app = build_app(store, pipeline, policy.directory, secure_cookies=not is_loopback(args.host),
                        policy_sync=sync)
        runner = web.AppRunner(app, access_log=logging.getLogger("caveat.web.access"), access_log_class=AccessLog)
        await runner.setup()
        site = web.TCPSite(runner, args.host, args.port)
        await site.start()
        host = f"[{args.host}]" if ":" in args.host else args.host
        print(f"Caveat dashboard on http://{host}:{args.port}/ (database {redact_url(str(db))}); press Ctrl+C to stop.", flush=True)
        if ready is not None:
            ready.set()
        await asyncio.Event().wait()
        return 0
    finally:
        if sync_task is not None:
            sync_task.cancel()
        if runner is not None:
            await runner.cleanup()
        if scorer is not None:
            await scorer.close()
        await store.close()


def main(args) -> int:
    """`caveat serve`."""
    problem = bind_problem(args.host, args.allow_remote)
    if problem:
        print(f"caveat: {problem}", file=sys.stderr)
        return 2
    policy = load_policy(getattr(args, "policy", None))
    warn_once(policy)
    scorer = _load_scorer(args)
    try:
        return asyncio.run(serve(args, policy, scorer))
    except KeyboardInterrupt:
        return 0
    except OSError as exc:
        print(f"caveat: cannot listen on {args.host}:{args.port}: {exc.strerror or exc}", file=sys.stderr)
        return 1
