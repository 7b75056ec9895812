"""Sentence embeddings from the int8 base encoder that serving runs, with a disk cache (training only).

`caveat train` fits its head on these vectors, so the head sees exactly what the served graph computes.
The export is made once per base encoder under `CAVEAT_CACHE_DIR`; each text's vector is cached by the
sha256 of the text, so a second `caveat train` on the same data skips the encoder.
"""
from __future__ import annotations

import hashlib
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from classifiers.serving import base_model_path, cache_root, default_threads


EMBED_FORMAT = 5  # bump when the embedding graph changes (export FORMAT 6 changed only how a head is quantized)


def encoder_folder(base: str) -> Path:
    """The cached int8 embedding export for this base encoder (made on first use; needs torch)."""
    from classifiers.export import export

    h = hashlib.sha256(f"{EMBED_FORMAT}|embed|{Path(base).resolve()}".encode())
    for name in ("config.json", "tokenizer.json", "model.safetensors"):
        p = Path(base, name)
        if p.is_file():
            h.update(f"|{name}:{p.stat().st_size}".encode())
    folder = cache_root() / "onnx" / f"embed-{h.hexdigest()[:12]}"
    if not (folder / "serving.json").is_file():
        export(None, base, folder)
    return folder


class Embedder:
    """`embed(texts) -> float32 array (n, 384)`: one text per call, as serving scores one post per call."""

    def __init__(self, base: str | None = None, threads: int | None = None, max_length: int = 256):
        import onnxruntime as ort
        from tokenizers import Tokenizer

        base = base_model_path(base)
        folder = encoder_folder(base)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        self.session = ort.InferenceSession(str(folder / "model.int8.onnx"), opts, providers=["CPUExecutionProvider"])
        self.tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        self.tokenizer.enable_truncation(max_length=max_length)
        self.tokenizer.no_padding()
        self.threads = threads or default_threads()
        self.key = f"{folder.name}-{max_length}"
        self.cache_dir = cache_root() / "embeddings" / self.key
        self.cache_dir.mkdir(parents=True, exist_ok=True)

    def _one(self, text: str) -> np.ndarray:
        ids = np.asarray([self.tokenizer.encode(text or ".").ids], dtype=np.int64)
        return self.session.run(None, {"input_ids": ids, "attention_mask": np.ones_like(ids)})[0][0]

    def embed(self, texts: list[str], progress: bool = True) -> np.ndarray:
        """Vectors for `texts` in order; cached ones are read from disk, the rest computed on `threads` threads."""
        keys = [hashlib.sha256(t.encode("utf-8")).hexdigest()[:24] for t in texts]
        store = self.cache_dir / "vectors.npz"
        cached: dict[str, np.ndarray] = {}
        if store.is_file():
            with np.load(store) as z:
                cached = dict(zip(z["keys"].tolist(), z["vecs"]))
        todo = sorted({k: t for k, t in zip(keys, texts) if k not in cached}.items())
        if todo:
            started = time.time()
            with ThreadPoolExecutor(self.threads) as pool:
                for n, (k, vec) in enumerate(zip((k for k, _ in todo), pool.map(self._one, (t for _, t in todo))), 1):
                    cached[k] = vec.astype(np.float32)
                    if progress and n % 2000 == 0:
                        print(f"caveat: embedded {n}/{len(todo)} posts ({n / (time.time() - started):.0f}/s)",
                              file=sys.stderr, flush=True)
            all_keys = sorted(cached)
            tmp = self.cache_dir / "vectors.tmp.npz"
            np.savez(tmp, keys=np.asarray(all_keys), vecs=np.stack([cached[k] for k in all_keys]))
            tmp.replace(store)
        return np.stack([cached[k] for k in keys]).astype(np.float32)
