"""Arguments of `caveat train` (kept apart so the CLI can list them without importing torch)."""
from pathlib import Path

ARTIFACT = Path(__file__).resolve().parent / "artifacts" / "caveat-minilm"


def add_arguments(p) -> None:
    """Add `caveat train` options to parser `p`."""
    p.add_argument("--data-dir", help="folder holding external/ and real-dev/ (default: $CAVEAT_DATA_DIR, "
                                      "else ../shared/data when it exists)")
    p.add_argument("--out", default=str(ARTIFACT), help="where to write the artifact (default: the shipped one)")
    p.add_argument("--base", help="base encoder directory (default: $CAVEAT_BASE_MODEL or packaged MiniLM)")
    p.add_argument("--seed", type=int, help="random seed: sampling, calibration split, initialisation (default 14)")
    p.add_argument("--epochs", type=int, help="fine-tuning epochs (default 2)")
    p.add_argument("--no-progress", action="store_true", help="hide progress messages")
