"""Arguments of `caveat run` (kept apart from bot.client so building the CLI never imports discord.py)."""
from __future__ import annotations


def add_arguments(p) -> None:
    """Add the options of `caveat run` to its subparser."""
    p.add_argument("--db", help="database file (default: $CAVEAT_DB or the user data directory)")
    p.add_argument("--model", help="trained model directory (default: $CAVEAT_MODEL_DIR or the shipped model)")
    p.add_argument("--rules-only", action="store_true", help="score with keyword rules only (skip the model)")
    from bot.score_workers import add_argument as add_score_workers
    add_score_workers(p)  # --score-workers N
    p.add_argument("--no-sync", action="store_true",
                   help="do not publish slash commands to Discord at start (they were synced before)")
    p.add_argument("--metrics-port", type=int, help="serve /healthz and /metrics on this port (default: off)")
    p.add_argument("--metrics-host", default="127.0.0.1", help="address for --metrics-port (default 127.0.0.1)")
