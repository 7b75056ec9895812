"""Arguments of `caveat eval` (kept apart so the CLI can list them without importing torch)."""


def add_arguments(p) -> None:
    """Add `caveat eval` options to parser `p`."""
    p.add_argument("file", help="JSON lines with text and label (label may be 'benign')")
    p.add_argument("--out", default="eval-out", help="folder for plots and metrics.json (default: eval-out)")
    p.add_argument("--model", help="trained model directory (default: $CAVEAT_MODEL_DIR or the shipped model)")
    p.add_argument("--backend", choices=("onnx-int8", "torch"),
                   help="scoring backend (default: $CAVEAT_BACKEND or onnx-int8, what the bot serves)")
    p.add_argument("--write-thresholds", action="store_true",
                   help="choose operating points on FILE and write them, with provenance, to the policy's thresholds.yaml")
    p.add_argument("--eval-set", help="name recorded as the thresholds' eval_set (default: the file name)")
