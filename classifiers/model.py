"""The transformer classifier: a MiniLM encoder with merged LoRA adapters and a sigmoid head, local weights only.

`predict(texts) -> list[{label: probability}]`. The artifact (`adapter.safetensors` + `caveat_model.json`) is a
few MB and sits on top of the packaged base encoder; nothing is ever downloaded.
"""
from __future__ import annotations

import os
import threading
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch  # noqa: E402
from safetensors.torch import load_file  # noqa: E402

from classifiers.lora import merge_adapters  # noqa: E402
from classifiers.normalize import normalize_text  # noqa: E402
from classifiers.serving import (  # noqa: E402,F401  (re-exported)
    CONFIG_NAME, DEFAULT_ARTIFACT, WEIGHTS_NAME, ModelUnavailable, artifact_path, base_model_path, read_config,
)



def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Average of token vectors, ignoring padding (how all-MiniLM-L6-v2 was trained to be used)."""
    m = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)


def load_encoder(path: str):
    """Tokenizer and encoder from a local HF directory (offline)."""
    from transformers import AutoModel, AutoTokenizer
    if not Path(path, "config.json").is_file():
        raise ModelUnavailable(f"no encoder at {path} (config.json missing)")
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    encoder = AutoModel.from_pretrained(path, local_files_only=True)
    return tokenizer, encoder


class Classifier:
    """A loaded classifier: `predict(texts)` returns per-label probabilities."""

    backend = "torch"

    def __init__(self, artifact: str | os.PathLike | None = None, *, base: str | None = None, threads: int | None = None):
        artifact = artifact_path(artifact)
        self.config = read_config(artifact)
        self.labels: list[str] = list(self.config["labels"])
        self.version: str = self.config["version"]
        self.max_length: int = int(self.config.get("max_length", 128))
        if threads:
            torch.set_num_threads(threads)
        self.tokenizer, self.encoder = load_encoder(base_model_path(base))
        tensors = load_file(str(artifact / WEIGHTS_NAME))
        adapters = {k[len("encoder."):]: v for k, v in tensors.items() if k.startswith("encoder.")}
        merge_adapters(self.encoder, adapters, float(self.config["lora_scale"]))
        self.head = torch.nn.Linear(self.encoder.config.hidden_size, len(self.labels))
        self.head.load_state_dict({"weight": tensors["head.weight"], "bias": tensors["head.bias"]})
        self.encoder.eval()
        self.head.eval()
        self._lock = threading.Lock()

    @torch.inference_mode()
    def _batch(self, texts: list[str]) -> torch.Tensor:
        enc = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt")
        hidden = self.encoder(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).last_hidden_state
        return torch.sigmoid(self.head(mean_pool(hidden, enc["attention_mask"])))

    def predict(self, texts: str | list[str], batch_size: int = 16) -> list[dict[str, float]]:
        """Probabilities per label for each text; batches are length-sorted to cut padding."""
        if isinstance(texts, str):
            texts = [texts]
        clean = [normalize_text(t) or "." for t in texts]
        order = sorted(range(len(clean)), key=lambda i: len(clean[i]))
        out: dict[int, dict[str, float]] = {}
        with self._lock:
            for start in range(0, len(order), batch_size):
                idx = order[start:start + batch_size]
                probs = self._batch([clean[i] for i in idx])
                for row, i in enumerate(idx):
                    out[i] = {lab: float(probs[row, j]) for j, lab in enumerate(self.labels)}
        return [out[i] for i in range(len(clean))]


def get_classifier(artifact: str | None = None, base: str | None = None) -> "Classifier":
    """The process-wide fp32 torch classifier for this artifact (loaded once)."""
    from classifiers.serving import get_scorer
    return get_scorer(artifact, base, backend="torch")
