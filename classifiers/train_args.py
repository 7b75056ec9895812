"""Arguments of `caveat train` (kept apart so the CLI can list them without importing torch)."""
from pathlib import Path

DATA = Path(__file__).resolve().parent / "data"
ARTIFACT = Path(__file__).resolve().parent / "artifacts" / "caveat-minilm"


def add_arguments(p) -> None:
    """Add `caveat train` options to parser `p`."""
    p.add_argument("--train", default=str(DATA / "train.jsonl"), help="training JSON lines (text, label)")
    p.add_argument("--dev", default=str(DATA / "dev.jsonl"), help="dev JSON lines (text, label)")
    p.add_argument("--out", default=str(ARTIFACT), help="where to write the artifact (default: the shipped one)")
    p.add_argument("--base", help="base encoder directory (default: $CAVEAT_BASE_MODEL or packaged MiniLM)")
    p.add_argument("--epochs", type=int, help="epochs (default 3)")
    p.add_argument("--max-steps", type=int, help="stop after this many steps (smoke tests)")
    p.add_argument("--seed", type=int, help="random seed (default 14)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
