"""Arguments of `caveat eval` (kept apart so the CLI can list them without importing torch)."""


def add_arguments(p) -> None:
    """Add `caveat eval` options to parser `p`."""
    p.add_argument("file", nargs="?", help="JSON lines with text and label (default: real-dev from the data "
                                           "directory first, then the in-house dev set)")
    p.add_argument("--data-dir", help="folder holding real-dev/ (default: $CAVEAT_DATA_DIR, else ../shared/data)")
    p.add_argument("--out", default="eval-out", help="folder for plots and metrics.json (default: eval-out)")
    p.add_argument("--model", help="trained model directory (default: $CAVEAT_MODEL_DIR or the shipped model)")
    p.add_argument("--backend", choices=("onnx-int8", "torch"),
                   help="scoring backend (default: $CAVEAT_BACKEND or onnx-int8, what the bot serves)")
    p.add_argument("--write-thresholds", action="store_true",
                   help="install the model's rule-model combination and choose operating points (on real-dev, or "
                        "on FILE), writing them with provenance to the policy's combine.yaml and thresholds.yaml")
    p.add_argument("--eval-set", help="name recorded as the thresholds' eval_set (default: the file name)")
