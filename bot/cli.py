"""`caveat`: check posts, replay a channel history, validate policy, train and evaluate, run the bot or dashboard."""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from dataclasses import replace
from pathlib import Path

from bot.engine import Decision, Engine, Post
from classifiers.jsonl import read_lines, read_text_rows
from classifiers.jsonl import row_id as json_row_id
from classifiers.normalize import clean_text
from classifiers.rules import truncation_notice
from policies.loader import PolicyError, PolicySet, load_policy, warn_once
from policies.schema import LABELS
from policies.settings import SettingsError, load_settings

EXIT_USAGE = 2


def _fail(message: str, code: int = EXIT_USAGE) -> int:
    print(f"caveat: {message}", file=sys.stderr)
    return code


def _policy(args) -> PolicySet:
    policy = load_policy(getattr(args, "policy", None))
    warn_once(policy)  # withdrawn or soon-expiring notes, once, on stderr
    return policy


def _scorer(args):
    """The model scorer for the CLI, or None for rules only (--rules-only, or no model artifact)."""
    if getattr(args, "rules_only", False):
        return None
    from classifiers.serving import ModelUnavailable, load_default_classifier
    try:
        return load_default_classifier(getattr(args, "model", None))
    except ModelUnavailable as exc:
        print(f"caveat: model unavailable ({exc}); using keyword rules only", file=sys.stderr)
        return None


def _highlight(text: str, decision: Decision, color: bool) -> str:
    spans = sorted({(s.start, s.end) for h in decision.rule_hits if h.weight > 0 for s in h.spans})
    out, pos = [], 0
    for start, end in spans:
        if start < pos:
            continue
        out.append(text[pos:start])
        out.append(f"\033[1;33m{text[start:end]}\033[0m" if color else f"[{text[start:end]}]")
        pos = end
    out.append(text[pos:])
    return "".join(out)


def render_verdict(text: str, d: Decision, color: bool = False) -> str:
    """The readable verdict printed by `caveat check "text"`."""
    lines = [f"Post:    {_highlight(text, d, color)}", f"Action:  {d.action}",
             "Labels:  " + (", ".join(f"{lab} ({d.scores[lab]:.2f})" for lab in d.labels) or "none (benign)"),
             "Scores:  " + "  ".join(f"{lab} {d.scores[lab]:.2f}" for lab in LABELS)]
    for h in d.rule_hits:
        if h.weight == 0:
            continue
        state = "" if h.active else f"  (set aside: exception {h.suppressed_by!r})"
        lines.append(f"Rule:    {h.rule_id} -> {h.label} w={h.weight:g}: " + ", ".join(repr(s.text) for s in h.spans) + state)
    if d.note:
        lines.append(f"Note:    [{d.note.id}] {d.note.title}")
        lines.append(f"         {d.note.text}")
        for i, c in enumerate(d.note.citations, 1):
            ids = ", ".join(x for x in (f"PMID {c.pmid}" if c.pmid else "", f"doi:{c.doi}" if c.doi else "") if x)
            extra = f" ({c.caveat})" if c.caveat else ""
            title = c.title if c.title.endswith((".", "?", "!")) else c.title + "."
            lines.append(f"  [{i}] {title} {c.byline}.{(' ' + ids + '.') if ids else ''}{extra} {c.link or ''}".rstrip())
    if d.resources:
        lines.append("Crisis resources:")
        lines.extend(f"  - {r.name}: {r.contact}" + (f" ({r.url})" if r.url else "") for r in d.resources)
    lines.append(f"Why:     {d.why}")
    lines.append(f"Versions: model {d.model_version}, policy {d.policy_version}")
    return "\n".join(lines)


def jsonl_row(row_id, d: Decision) -> dict:
    """The stable `caveat check --jsonl` output contract."""
    return {"id": row_id, "labels": list(d.labels), "scores": {k: round(v, 4) for k, v in d.scores.items()},
            "action": d.action, "note_id": d.note_id,
            "rules": [h.rule_id for h in d.rule_hits if h.active and h.weight > 0]}


async def _check_jsonl(args, engine: Engine, scorer) -> int:
    source = "<stdin>" if args.jsonl == "-" else args.jsonl
    rows = []
    try:
        if args.jsonl == "-":
            stdin = getattr(sys.stdin, "buffer", None)
            lines = read_lines(stdin.read(), source) if stdin is not None else sys.stdin.read().split("\n")
        else:
            lines = read_lines(Path(args.jsonl).read_bytes(), source)
        for n, row in read_text_rows(lines, source):
            row_id = json_row_id(row, source, n)
            rows.append((n if row_id is None else row_id, row["text"]))
    except ValueError as exc:
        return _fail(str(exc))
    except IsADirectoryError:
        return _fail(f"{source} is a directory, not a JSON lines file")
    scores = await scorer.score_many([engine.model_input(t) for _, t in rows]) if scorer else [None] * len(rows)
    version = scorer.version if scorer else "rules-only"
    for (row_id, text), s in zip(rows, scores):
        d = _assess(engine, Post("cli", str(row_id), "cli", "cli", text), s, version)
        print(json.dumps(jsonl_row(row_id, d), ensure_ascii=False))
    return 0


def _assess(engine: Engine, post: Post, scores, version: str) -> Decision:
    """`engine.assess`, with `why` saying so when the post was longer than what is assessed in full."""
    d = engine.assess(post, scores, model_version=version)
    notice = truncation_notice(post.text)
    return replace(d, why=f"{d.why} {notice}") if notice else d


def cmd_check(args) -> int:
    """Assess text and print the verdict (or JSON lines with --jsonl)."""
    policy = _policy(args)
    engine = Engine(policy)
    scorer = _scorer(args)

    async def run() -> int:
        try:
            if args.jsonl:
                return await _check_jsonl(args, engine, scorer)
            if not args.text:
                return _fail("check needs TEXT or --jsonl FILE")
            text = clean_text(" ".join(args.text))  # a lone surrogate (from a bad terminal) cannot be printed
            s = await scorer.score(engine.model_input(text)) if scorer else None
            d = _assess(engine, Post("cli", "0", "cli", "cli", text), s, scorer.version if scorer else "rules-only")
            if args.json:
                print(json.dumps(d.to_dict(), ensure_ascii=False, indent=2))
            else:
                print(render_verdict(text, d, color=sys.stdout.isatty()))
            return 0
        finally:
            if scorer:
                await scorer.close()
    return asyncio.run(run())


def _load_or_report(directory) -> PolicySet | None:
    """The policy in `directory`, or None after printing each problem as `file:line: what` on stderr."""
    try:
        return load_policy(directory)
    except PolicyError as exc:
        for issue in exc.issues:
            print(str(issue), file=sys.stderr)
        return None


def cmd_policy_validate(args) -> int:
    """Validate a policy directory; exit 2 with file:line errors, 1 with --strict when a note expired or expires soon."""
    p = _load_or_report(args.dir)
    if p is None:
        return EXIT_USAGE
    for warning in p.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    withdrawn = f" ({len(p.withdrawn_notes)} more withdrawn)" if p.withdrawn_notes else ""
    print(f"ok: {p.directory}: {len(p.rules)} rules, {len(p.notes)} notes{withdrawn}, policy version {p.version}")
    return 1 if args.strict and p.warnings else 0


def cmd_policy_publish(args) -> int:
    """Put a policy directory in force for every Caveat process on the database (they follow within seconds)."""
    from bot.policy_sync import PolicySync
    from bot.storage import Store, default_db_path
    p = _load_or_report(args.dir)
    if p is None:
        print("caveat: policy NOT published: fix the problems above", file=sys.stderr)
        return EXIT_USAGE

    async def run() -> int:
        store = await Store.open(args.db or default_db_path())
        try:
            before = await store.active_policy()
            await PolicySync(store, lambda: p, lambda _: None).publish(p, actor=f"cli:{args.actor}")
        finally:
            await store.close()
        was = before["version"] if before else "none"
        print(f"published policy {p.version} from {p.directory} (was {was}); running processes follow it")
        return 0
    return asyncio.run(run())


def cmd_replay(args) -> int:
    """Score a channel history into shadow cases and print what Caveat would have done."""
    from bot.replay import replay
    return asyncio.run(replay(args, _policy(args), _scorer(args)))


def cmd_export_feedback(args) -> int:
    """Write moderator outcomes as labeled JSON lines for retraining."""
    from bot.storage import Store, default_db_path

    async def run() -> int:
        store = await Store.open(args.db or default_db_path())
        try:
            rows = await store.export_feedback()
        finally:
            await store.close()
        out = open(args.output, "w", encoding="utf-8") if args.output != "-" else sys.stdout
        for row in rows:
            out.write(json.dumps(row, ensure_ascii=False) + "\n")
        if out is not sys.stdout:
            out.close()
            print(f"wrote {len(rows)} examples to {args.output}", file=sys.stderr)
        return 0
    return asyncio.run(run())


def cmd_purge(args) -> int:
    """Apply the retention limit now: drop post text older than the configured days."""
    from bot.storage import Store, default_db_path
    days = args.days or _policy(args).community.retention_days

    async def run() -> int:
        store = await Store.open(args.db or default_db_path())
        try:
            n = await store.purge_retention(days)
            await store.compact()  # PostgreSQL: removed text leaves the table files too
        finally:
            await store.close()
        print(f"purged the text of {n} posts older than {days} days")
        return 0
    return asyncio.run(run())


TRAIN_HINT = ("install the training extra: pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu"
              " && pip install 'caveat[train]' (in a checkout: pip install -e '.[train]')")


def cmd_export_model(args) -> int:
    """The one-time step: build the int8 ONNX serving model from the artifact into the cache (needs torch)."""
    import importlib
    missing = []
    for name in ("torch", "transformers", "onnx"):
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    if missing:
        return _fail(f"export-model needs {', '.join(missing)}, which serving does not; {TRAIN_HINT}")
    from classifiers.serving import ModelUnavailable, cache_root, prepare_onnx
    try:
        folder = prepare_onnx(args.model, args.base)
    except ModelUnavailable as exc:
        return _fail(f"cannot export the model: {exc}")
    print(f"int8 serving model ready in {folder} (cache root {cache_root()}; set CAVEAT_CACHE_DIR to move it)")
    return 0


def _lazy(module: str, func: str = "main"):
    """A subcommand handler that imports its module only when run (keeps `caveat check` light)."""
    def run(args) -> int:
        import importlib
        return getattr(importlib.import_module(module), func)(args)
    return run


def _add_heavy_commands(sub) -> None:
    """Subcommands whose modules pull in torch, discord.py or aiohttp; each module has `add_arguments`."""
    import importlib
    for name, module, help_text in HEAVY_COMMANDS:
        sp = sub.add_parser(name, help=help_text)
        importlib.import_module(module + "_args").add_arguments(sp)
        sp.set_defaults(func=_lazy(module))


HEAVY_COMMANDS: list[tuple[str, str, str]] = [
    ("train", "classifiers.train", "fine-tune the classifier and write the artifact"),
    ("eval", "classifiers.evaluate", "evaluate model and rules on labeled JSON lines; choose thresholds"),
    ("run", "bot.client", "run the Discord bot (needs DISCORD_TOKEN)"),
    ("serve", "bot.web.app", "start the moderators' dashboard and sandbox channel"),
]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for every subcommand."""
    p = argparse.ArgumentParser(prog="caveat", description=__doc__)
    p.add_argument("--policy", help="policy directory (default: $CAVEAT_POLICY_DIR or the shipped policies)")
    p.add_argument("-v", "--verbose", action="store_true", help="log more")
    p.add_argument("--log-json", action="store_true",
                   help="log one JSON object per line (time, level, logger, message, ids; never post text)")
    sub = p.add_subparsers(dest="command", required=True)

    def model_opts(sp):
        sp.add_argument("--model", help="trained model directory (default: $CAVEAT_MODEL_DIR or the shipped model)")
        sp.add_argument("--rules-only", action="store_true", help="score with keyword rules only")

    c = sub.add_parser("check", help="assess a post and print the verdict")
    c.add_argument("text", nargs="*", help="the post text")
    c.add_argument("--jsonl", metavar="FILE", help="read JSON lines with id and text ('-' for stdin)")
    c.add_argument("--json", action="store_true", help="print the full decision as JSON")
    model_opts(c)
    c.set_defaults(func=cmd_check)

    r = sub.add_parser("replay", help="score a channel export into shadow cases")
    r.add_argument("export", help="DiscordChatExporter JSON export or JSON lines with id and text")
    r.add_argument("--db", help="database file (default: $CAVEAT_DB or the user data directory)")
    r.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    r.add_argument("--community", help="the Discord server id the history belongs to (default: the export's guild;"
                                       " 'replay' for JSON lines)")
    model_opts(r)
    from bot.score_workers import add_argument as add_score_workers
    add_score_workers(r)  # --score-workers N
    r.set_defaults(func=cmd_replay)

    pol = sub.add_parser("policy", help="policy tools")
    pol_sub = pol.add_subparsers(dest="policy_command", required=True)
    v = pol_sub.add_parser("validate", help="validate a policy directory")
    v.add_argument("dir", nargs="?", help="policy directory (default: the shipped policies)")
    v.add_argument("--strict", action="store_true",
                   help="exit 1 if any note is withdrawn or expires within 30 days (for CI)")
    v.set_defaults(func=cmd_policy_validate)

    pp = pol_sub.add_parser("publish", help="put a policy directory in force for every process on the database")
    pp.add_argument("dir", nargs="?", help="policy directory (default: $CAVEAT_POLICY_DIR or the shipped policies)")
    pp.add_argument("--db", help="database file or postgresql:// URL (default: $CAVEAT_DB)")
    pp.add_argument("--actor", default="operator", help="who publishes, for the record (default: operator)")
    pp.set_defaults(func=cmd_policy_publish)

    e = sub.add_parser("export-feedback", help="write moderator outcomes as labeled JSON lines")
    e.add_argument("--db", help="database file")
    e.add_argument("-o", "--output", default="-", help="output file (default: stdout)")
    e.set_defaults(func=cmd_export_feedback)

    pu = sub.add_parser("purge", help="drop post text older than the retention limit")
    pu.add_argument("--db", help="database file")
    pu.add_argument("--days", type=int, help="override community.retention_days")
    pu.set_defaults(func=cmd_purge)

    h = sub.add_parser("health", help="check that the database answers and the model loads (exit 1 if not)")
    h.add_argument("--db", help="database file (default: $CAVEAT_DB or the user data directory); opened read-only")
    h.add_argument("--no-db", action="store_true", help="check the model only (for image builds)")
    model_opts(h)
    h.set_defaults(func=_lazy("bot.health"))

    x = sub.add_parser("export-model", help="one-time step: build the int8 serving model into the cache"
                                            " (needs the train extra)")
    x.add_argument("--model", help="trained model directory (default: $CAVEAT_MODEL_DIR or the shipped model)")
    x.add_argument("--base", help="base encoder directory (default: $CAVEAT_BASE_MODEL or the packaged one)")
    x.set_defaults(func=cmd_export_model)

    _add_heavy_commands(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `caveat` console script."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    parser = build_parser()
    args = parser.parse_args(argv)
    from bot.logs import setup_logging
    setup_logging(json=args.log_json, verbose=args.verbose)
    try:
        load_settings()  # every environment variable checked once, at start: a bad one stops here, named
        return args.func(args)
    except SettingsError as exc:
        print("caveat: invalid configuration:", file=sys.stderr)
        for line in str(exc).splitlines():
            print(f"  {line}", file=sys.stderr)
        return EXIT_USAGE
    except PolicyError as exc:
        print("caveat: invalid policy:", file=sys.stderr)
        for issue in exc.issues:
            print(f"  {issue}", file=sys.stderr)
        return EXIT_USAGE
    except FileNotFoundError as exc:
        return _fail(f"file not found: {exc.filename}")
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
