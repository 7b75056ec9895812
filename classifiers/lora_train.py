"""LoRA fine-tuning on in-house examples: the recipe of models up to caveat-minilm-daa7163f58 (benchmarks/train_sweep.py; `caveat train` now fits on real posts, see classifiers/train.py).

`caveat train` reproduces the shipped artifact: fixed seeds, fixed thread count, deterministic batching.
"""
from __future__ import annotations

import hashlib
import json
import os
import random
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

from classifiers.jsonl import read_text_rows  # noqa: E402
from classifiers.lora import add_adapters, adapter_state  # noqa: E402
from classifiers.model import CONFIG_NAME, WEIGHTS_NAME, base_model_path, load_encoder, mean_pool  # noqa: E402
from classifiers.normalize import normalize_text  # noqa: E402
from policies.schema import LABELS  # noqa: E402

DATA = Path(__file__).resolve().parent / "data"
# No dropout (adapters or encoder): on this CPU dropout masks cost ~44% of a step, and with it off 3 epochs over
# all six layers at 256 tokens train in about 15 minutes on 2 cores; measured choices are in README ("The classifier").
DEFAULTS = dict(epochs=3, batch_size=16, lr=1e-3, head_lr=3e-3, weight_decay=0.01, rank=8, alpha=16.0,
                dropout=0.0, encoder_dropout=0.0, max_length=256, seed=14, warmup=0.06, threads=2, pos_weight_cap=1.0,
                lora_from_layer=0)


def read_rows(path: str | Path) -> list[dict]:
    """Labeled rows {text, label}; errors name the file and line."""
    rows = []
    for n, row in read_text_rows(Path(path).read_text(encoding="utf-8").splitlines(), str(path)):
        label = row.get("label")
        if label not in (*LABELS, "benign"):
            raise ValueError(f"{path}:{n}: needs a string 'text' and a 'label' in {(*LABELS, 'benign')}")
        rows.append(row)
    return rows


def targets(rows: list[dict]) -> torch.Tensor:
    """Multi-hot targets; benign is all zeros."""
    y = torch.zeros(len(rows), len(LABELS))
    for i, r in enumerate(rows):
        if r["label"] in LABELS:
            y[i, LABELS.index(r["label"])] = 1.0
    return y


def file_hash(*paths) -> str:
    """sha256 of the training data files, recorded in the artifact."""
    h = hashlib.sha256()
    for p in paths:
        h.update(Path(p).read_bytes())
    return h.hexdigest()[:16]


class Trainee(torch.nn.Module):
    """Encoder with adapters + head, as trained."""

    def __init__(self, encoder, n_labels: int):
        super().__init__()
        self.encoder = encoder
        self.head = torch.nn.Linear(encoder.config.hidden_size, n_labels)

    def forward(self, input_ids, attention_mask):
        """Logits per label."""
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return self.head(mean_pool(hidden, attention_mask))


def _batches(n: int, lengths: list[int], batch_size: int, rng: random.Random) -> list[list[int]]:
    """Shuffle, then sort within pools of 50 batches by length: little padding, still random."""
    idx = list(range(n))
    rng.shuffle(idx)
    pool = batch_size * 50
    out: list[list[int]] = []
    for s in range(0, n, pool):
        chunk = sorted(idx[s:s + pool], key=lambda i: lengths[i])
        out.extend(chunk[k:k + batch_size] for k in range(0, len(chunk), batch_size))
    rng.shuffle(out)
    return out


@torch.inference_mode()
def predict_probs(model: Trainee, tokenizer, texts: list[str], max_length: int, batch_size: int = 64) -> torch.Tensor:
    """Sigmoid probabilities for texts (length-sorted batches), in input order."""
    model.eval()
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    out = torch.zeros(len(texts), len(LABELS))
    for s in range(0, len(order), batch_size):
        idx = order[s:s + batch_size]
        enc = tokenizer([texts[i] for i in idx], padding=True, truncation=True, max_length=max_length, return_tensors="pt")
        out[idx] = torch.sigmoid(model(enc["input_ids"], enc["attention_mask"]))
    return out


def train(train_path, dev_path, out_dir, *, base: str | None = None, max_steps: int | None = None,
          progress: bool = True, on_epoch=None, **overrides) -> dict:
    """Train and save the artifact; returns the dev metrics.

    `on_epoch(epoch, predict)`, if given, is called after each full epoch with a function that scores texts
    (sigmoid probabilities) with the model as it is then; experiments use it to watch dev metrics per epoch.
    """
    from tqdm import tqdm
    from classifiers.metrics import label_metrics

    cfg = {**DEFAULTS, **{k: v for k, v in overrides.items() if v is not None}}
    torch.set_num_threads(int(cfg["threads"]))
    random.seed(cfg["seed"])
    torch.manual_seed(cfg["seed"])
    rng = random.Random(cfg["seed"])
    train_rows, dev_rows = read_rows(train_path), read_rows(dev_path)
    base = base_model_path(base)
    tokenizer, encoder = load_encoder(base)
    for p in encoder.parameters():
        p.requires_grad_(False)
    if cfg["encoder_dropout"] is not None:  # None keeps the encoder's own dropout (0.1 for MiniLM)
        for mod in encoder.modules():
            if isinstance(mod, torch.nn.Dropout):
                mod.p = float(cfg["encoder_dropout"])
    add_adapters(encoder, cfg["rank"], cfg["alpha"], cfg["dropout"], from_layer=int(cfg["lora_from_layer"]))
    model = Trainee(encoder, len(LABELS))

    texts = [normalize_text(r["text"]) for r in train_rows]
    y = targets(train_rows)
    enc = tokenizer(texts, truncation=True, max_length=cfg["max_length"])
    lengths = [len(ids) for ids in enc["input_ids"]]
    lora_params = [p for n, p in model.named_parameters() if "lora_" in n]
    opt = torch.optim.AdamW([{"params": lora_params, "lr": cfg["lr"]},
                             {"params": model.head.parameters(), "lr": cfg["head_lr"]}],
                            weight_decay=cfg["weight_decay"])
    steps_per_epoch = (len(texts) + cfg["batch_size"] - 1) // cfg["batch_size"]
    total = steps_per_epoch * cfg["epochs"] if max_steps is None else max_steps
    warm = max(1, int(total * cfg["warmup"]))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warm) * max(0.0, (total - s) / max(1, total - warm)) if s >= warm else (s + 1) / warm)
    pos = y.sum(0)
    pos_weight = ((len(y) - pos) / pos.clamp(min=1)).clamp(min=1.0, max=float(cfg["pos_weight_cap"]))  # cap 1.0 (default): every label weighs the same
    loss_fn = torch.nn.BCEWithLogitsLoss(pos_weight=pos_weight)

    started = time.time()
    step = 0
    bar = tqdm(total=total, desc="train", unit="step", disable=not progress, file=sys.stderr)
    while step < total:
        model.train()
        for idx in _batches(len(texts), lengths, cfg["batch_size"], rng):
            if step >= total:
                break
            batch = tokenizer([texts[i] for i in idx], padding=True, truncation=True, max_length=cfg["max_length"],
                              return_tensors="pt")
            loss = loss_fn(model(batch["input_ids"], batch["attention_mask"]), y[idx])
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(lora_params + list(model.head.parameters()), 1.0)
            opt.step()
            sched.step()
            step += 1
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}")
        else:
            if on_epoch is not None:
                on_epoch(step // steps_per_epoch, lambda t: predict_probs(model, tokenizer, t, cfg["max_length"]))
    bar.close()

    dev_texts = [normalize_text(r["text"]) for r in dev_rows]
    probs = predict_probs(model, tokenizer, dev_texts, cfg["max_length"])
    metrics = label_metrics([r["label"] for r in dev_rows], probs.tolist(), threshold=0.5)
    tensors = {f"encoder.{k}": v for k, v in adapter_state(model.encoder).items()}
    tensors["head.weight"] = model.head.weight.detach().clone().contiguous()
    tensors["head.bias"] = model.head.bias.detach().clone().contiguous()
    weights_hash = hashlib.sha256(b"".join(t.numpy().tobytes() for _, t in sorted(tensors.items()))).hexdigest()[:10]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(out / WEIGHTS_NAME), metadata={"format": "caveat-lora-v1"})
    config = {
        "version": f"caveat-minilm-{weights_hash}", "labels": list(LABELS), "base_model": "all-MiniLM-L6-v2",
        "lora_rank": cfg["rank"], "lora_alpha": cfg["alpha"], "lora_scale": cfg["alpha"] / cfg["rank"],
        "max_length": cfg["max_length"], "pooling": "mean", "data_hash": file_hash(train_path, dev_path),
        "train_rows": len(train_rows), "dev_rows": len(dev_rows), "steps": step,
        "train_seconds": round(time.time() - started, 1), "hyperparameters": cfg,
        "dev_metrics_at_0.5": {k: v for k, v in metrics.items() if k != "per_label"} | {"per_label": metrics["per_label"]},
    }
    (out / CONFIG_NAME).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    return {"version": config["version"], "seconds": config["train_seconds"], **metrics}


def main(args) -> int:
    """`caveat train`."""
    try:
        result = train(args.train, args.dev, args.out, base=args.base, max_steps=args.max_steps,
                       progress=not args.no_progress, epochs=args.epochs, seed=args.seed)
    except ValueError as exc:
        print(f"caveat: {exc}", file=sys.stderr)
        return 2
    print(f"model {result['version']} written to {args.out} in {result['seconds']} s")
    print(f"dev (threshold 0.5): macro-F1 {result['macro_f1']:.3f}, benign false-positive rate "
          f"{result['benign_fpr']:.3f}")
    for label, m in result["per_label"].items():
        print(f"  {label:22s} P {m['precision']:.3f}  R {m['recall']:.3f}  F1 {m['f1']:.3f}  (n={m['support']})")
    return 0
