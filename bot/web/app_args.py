"""Arguments of `caveat serve` (kept apart so the CLI can build its parser without importing aiohttp)."""
from __future__ import annotations


def add_arguments(p) -> None:
    """Add the `caveat serve` options to an argparse parser."""
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1, this machine only)")
    p.add_argument("--port", type=int, default=8080, help="port (default 8080)")
    p.add_argument("--db", help="database file (default: $CAVEAT_DB or the user data directory)")
    p.add_argument("--model", help="trained model directory (default: $CAVEAT_MODEL_DIR or the shipped model)")
    p.add_argument("--rules-only", action="store_true", help="score with keyword rules only")
    p.add_argument("--allow-remote", action="store_true",
                   help="allow a non-loopback --host (cookies are then Secure: put HTTPS in front)")
    p.add_argument("--no-seed", action="store_true", help="do not add example posts to an empty sandbox")
    p.add_argument("--new-token", action="store_true",
                   help="print a new moderator login token; the old one and its sessions stop working")
