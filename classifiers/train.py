"""`caveat train`: fine-tune the classifier on real community posts (plus in-house examples), never on real-dev.

Recipe (deterministic; about 12 minutes on 2 CPU cores):
1. Rows: label rows from `classifiers/data/real/` joined with text from the data directory (real-dev rows and
   their near-duplicates dropped), plus a sample of the in-house examples at a lower weight.
2. Split: about 15% of the real posts, by whole user/thread groups, are held out for calibration.
3. Fine-tune: LoRA adapters on the top layers of the packaged all-MiniLM-L6-v2 plus a sigmoid head, two epochs
   over every hand-labelled post, a per-(source, label) sample of the posts labelled by mapping and the in-house
   examples, each row weighted by its label's confidence. The text is what serving feeds the model: `model_input()` (the rules'
   normalization with the policy's watched terms).
4. Combination with the rules: on the held-out calibration posts, the model's logit and the rules' two scores
   per label are fitted by a logistic regression per label (Platt calibration and rule weights in one), written
   to `combine.yaml` in the artifact; `caveat eval --write-thresholds` installs it in the policy.
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

import numpy as np  # noqa: E402
import torch  # noqa: E402
import yaml  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

from classifiers.jsonl import read_text_rows  # noqa: E402
from classifiers.model import CONFIG_NAME, WEIGHTS_NAME  # noqa: E402
from classifiers.normalize import model_input  # noqa: E402
from classifiers.realdata import (  # noqa: E402
    DataMissing, default_data_dir, join, label_files, read_labels,
)
from policies.schema import LABELS  # noqa: E402

DATA = Path(__file__).resolve().parent / "data"
COMBINE_NAME = "combine.yaml"
# Measured choices (benchmarks/RESULTS.md, "Real posts"): adapters on layers 3-5 only (half the cost of all six,
# and the frozen lower layers need no backward pass), 128 tokens in training, two epochs.
DEFAULTS = dict(epochs=2, batch_size=16, lr=1e-3, head_lr=3e-3, weight_decay=0.01, rank=8, alpha=16.0,
                lora_from_layer=3, train_max_length=128, max_length=256, warmup=0.06, seed=14, threads=2,
                mapped_per_group=400, inhouse_rows=9000, inhouse_weight=0.3, hand_weight=2.0, calib_share=0.15,
                calib_mapped_per_group=150)
def read_rows(path: str | Path) -> list[dict]:
    """Labeled rows {text, label}; errors name the file and line."""
    rows = []
    for n, row in read_text_rows(Path(path).read_text(encoding="utf-8").splitlines(), str(path)):
        if row.get("label") not in (*LABELS, "benign"):
            raise ValueError(f"{path}:{n}: needs a string 'text' and a 'label' in {(*LABELS, 'benign')}")
        rows.append(row)
    return rows


def targets(labels: list[str]) -> np.ndarray:
    """Multi-hot targets; benign is all zeros."""
    y = np.zeros((len(labels), len(LABELS)), dtype=np.float32)
    for i, lab in enumerate(labels):
        if lab in LABELS:
            y[i, LABELS.index(lab)] = 1.0
    return y


def fit_logistic(x: np.ndarray, y: np.ndarray, w: np.ndarray, l2: float, balance: bool = True,
                 iters: int = 200) -> tuple[np.ndarray, np.ndarray]:
    """Per-column weighted logistic regression with an L2 penalty (LBFGS, deterministic): returns (coef, bias)."""
    torch.manual_seed(0)
    xt, yt = torch.from_numpy(x).double(), torch.from_numpy(y).double()
    wt = torch.from_numpy(w).double().unsqueeze(1).expand_as(yt).clone()
    if balance:  # each label's positives weigh as much in total as its negatives
        pos = (wt * yt).sum(0).clamp(min=1e-9)
        neg = (wt * (1 - yt)).sum(0).clamp(min=1e-9)
        wt = torch.where(yt > 0, wt * (neg / pos), wt)
    wt = wt / wt.sum(0, keepdim=True) * len(x)
    coef = torch.zeros(x.shape[1], y.shape[1], dtype=torch.float64, requires_grad=True)
    bias = torch.zeros(y.shape[1], dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([coef, bias], lr=1, max_iter=iters, history_size=20, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        logits = xt @ coef + bias
        loss = (torch.nn.functional.binary_cross_entropy_with_logits(logits, yt, weight=wt, reduction="sum") / len(x)
                + l2 * (coef ** 2).sum())
        loss.backward()
        return loss

    opt.step(closure)
    return coef.detach().numpy(), bias.detach().numpy()


def held_out(group: str, share: float, seed: int) -> bool:
    """True for the calibration share of groups (a user's or thread's posts all fall on one side)."""
    return int(hashlib.sha256(f"{seed}|{group}".encode()).hexdigest()[:8], 16) / 0xFFFFFFFF < share


def select(rows: list[dict], cfg: dict) -> tuple[list[dict], list[dict]]:
    """(fine-tuning rows, calibration rows): every hand label, capped samples of mapped labels and in-house rows."""
    rng = random.Random(cfg["seed"])
    fit: list[dict] = []
    calib: list[dict] = []
    by_group: dict[tuple[str, str, bool], list[dict]] = {}
    inhouse = []
    for r in rows:
        if r["kind"] == "in-house":
            inhouse.append(r)
            continue
        cal = held_out(r["group"], cfg["calib_share"], cfg["seed"])
        if r["origin"] == "hand":
            (calib if cal else fit).append(r)
        else:
            by_group.setdefault((r["source"], r["label"], cal), []).append(r)
    for (_source, _label, cal), group in sorted(by_group.items()):
        group = sorted(group, key=lambda r: r["source_id"])
        rng.shuffle(group)
        (calib if cal else fit).extend(group[:cfg["calib_mapped_per_group" if cal else "mapped_per_group"]])
    inhouse = sorted(inhouse, key=lambda r: r["source_id"])
    rng.shuffle(inhouse)
    for r in inhouse[:cfg["inhouse_rows"]]:  # in-house rows calibrate too: real posts rarely trip the domain rules
        (calib if held_out(r["group"], cfg["calib_share"], cfg["seed"]) else fit).append(r)
    rng.shuffle(fit)
    return fit, calib


def row_weight(r: dict, cfg: dict) -> float:
    """A row's loss weight: its label confidence, times the hand-label or in-house factor."""
    if r["kind"] == "in-house":
        return cfg["inhouse_weight"]
    return r["weight"] * (cfg["hand_weight"] if r["origin"] == "hand" else 1.0)


def rule_features(texts: list[str], ruleset) -> np.ndarray:
    """Per row and label: [active rule score (noisy-or of weights), strongest suppressed hit's weight]."""
    from classifiers.rules import label_rule_features
    out = np.zeros((len(texts), len(LABELS), 2), dtype=np.float64)
    for i, text in enumerate(texts):
        feats = label_rule_features(ruleset.match(text), LABELS)
        for j, lab in enumerate(LABELS):
            out[i, j] = feats[lab]
    return out


def fit_combiner(logits: np.ndarray, rules: np.ndarray, y: np.ndarray, w: np.ndarray) -> dict:
    """Per label: p = sigmoid(bias + a*model_logit + b*rule_active + c*rule_suppressed), fitted without balancing."""
    out = {}
    for j, lab in enumerate(LABELS):
        feats = np.column_stack([np.clip(logits[:, j], -12, 12), rules[:, j, 0], rules[:, j, 1]])
        coef, bias = fit_logistic(feats, y[:, j:j + 1], w, l2=1e-4, balance=False)
        out[lab] = {"bias": round(float(bias[0]), 5), "model_logit": round(float(coef[0, 0]), 5),
                    "rule_active": round(float(coef[1, 0]), 5), "rule_suppressed": round(float(coef[2, 0]), 5)}
    return out


def _auc(scores: np.ndarray, positive: np.ndarray) -> float:
    pos, neg = scores[positive], scores[~positive]
    if not len(pos) or not len(neg):
        return float("nan")
    order = np.argsort(np.concatenate([pos, neg]), kind="mergesort")
    ranks = np.empty(len(order))
    ranks[order] = np.arange(1, len(order) + 1)
    return float((ranks[:len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def load_training_rows(data_dir: Path | None, inhouse: Path | None, label_dir: Path | None = None) -> tuple[list[dict], dict]:
    """Real label rows joined with their text, plus in-house examples; and counts for the model card."""
    labels = read_labels(label_files(label_dir) if label_dir else label_files())
    rows, counts = join(labels, data_dir)
    for r in rows:
        r["kind"] = "real"
    if inhouse is not None:
        for i, r in enumerate(read_rows(inhouse)):
            rows.append({"text": r["text"], "label": r["label"], "source": "in-house", "source_id": r.get("id", str(i)),
                         "weight": 1.0, "group": f"in-house:{r.get('id', i)}", "kind": "in-house"})
    return rows, counts


def finetune(texts: list[str], y: np.ndarray, w: np.ndarray, cfg: dict, base: str, progress: bool):
    """LoRA adapters and a head trained on (texts, y) with row weights w; returns (model, tokenizer)."""
    from tqdm import tqdm

    from classifiers.lora import add_adapters
    from classifiers.lora_train import Trainee, _batches
    from classifiers.model import load_encoder

    torch.manual_seed(cfg["seed"])
    rng = random.Random(cfg["seed"])
    tokenizer, encoder = load_encoder(base)
    for p in encoder.parameters():
        p.requires_grad_(False)
    for mod in encoder.modules():  # no dropout: deterministic, and about 44% cheaper per step on this CPU
        if isinstance(mod, torch.nn.Dropout):
            mod.p = 0.0
    add_adapters(encoder, cfg["rank"], cfg["alpha"], 0.0, from_layer=int(cfg["lora_from_layer"]))
    model = Trainee(encoder, len(LABELS))
    yt, wt = torch.from_numpy(y), torch.from_numpy(w.astype(np.float32))
    lengths = [len(ids) for ids in tokenizer(texts, truncation=True, max_length=cfg["train_max_length"])["input_ids"]]
    lora_params = [p for n, p in model.named_parameters() if "lora_" in n]
    opt = torch.optim.AdamW([{"params": lora_params, "lr": cfg["lr"]},
                             {"params": model.head.parameters(), "lr": cfg["head_lr"]}], weight_decay=cfg["weight_decay"])
    total = ((len(texts) + cfg["batch_size"] - 1) // cfg["batch_size"]) * cfg["epochs"]
    warm = max(1, int(total * cfg["warmup"]))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: (s + 1) / warm if s < warm else max(0.0, (total - s) / max(1, total - warm)))
    bar = tqdm(total=total, desc="fine-tune", unit="step", disable=not progress, file=sys.stderr)
    model.train()
    for _epoch in range(cfg["epochs"]):
        for idx in _batches(len(texts), lengths, cfg["batch_size"], rng):
            batch = tokenizer([texts[i] for i in idx], padding=True, truncation=True, max_length=cfg["train_max_length"],
                              return_tensors="pt")
            logits = model(batch["input_ids"], batch["attention_mask"])
            per_row = torch.nn.functional.binary_cross_entropy_with_logits(logits, yt[idx], reduction="none").mean(1)
            loss = (per_row * wt[idx]).sum() / wt[idx].sum()
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(lora_params + list(model.head.parameters()), 1.0)
            opt.step()
            sched.step()
            bar.update(1)
    bar.close()
    model.eval()
    return model, tokenizer


def train(out_dir, *, data_dir=None, inhouse=DATA / "train.jsonl", label_dir=None, base: str | None = None,
          policy_dir=None, progress: bool = True, **overrides) -> dict:
    """Train and write the artifact (adapters + head, config, combiner, model card); returns a summary."""
    from classifiers.lora import adapter_state
    from classifiers.lora_train import predict_probs
    from classifiers.model import base_model_path
    from classifiers.rules import RuleSet
    from policies.loader import load_policy

    cfg = {**DEFAULTS, **{k: v for k, v in overrides.items() if v is not None}}
    torch.set_num_threads(int(cfg["threads"]))
    started = time.time()
    data_dir = Path(data_dir) if data_dir else default_data_dir()
    rows, counts = load_training_rows(data_dir, Path(inhouse) if inhouse else None, label_dir)
    ruleset = RuleSet(load_policy(policy_dir).rules)
    fit, calib = select(rows, cfg)
    if not fit:
        raise ValueError("no training rows after selection")
    say = (lambda m: print(f"caveat: {m}", file=sys.stderr, flush=True)) if progress else (lambda m: None)
    say(f"{len(rows)} labelled rows ({counts['joined']} real; {counts['blocked_as_dev']} dropped as real-dev or "
        f"near-duplicates): fine-tuning on {len(fit)}, calibrating on {len(calib)}")
    model, tokenizer = finetune([model_input(r["text"], ruleset.watched) for r in fit],
                                targets([r["label"] for r in fit]), np.asarray([row_weight(r, cfg) for r in fit]),
                                cfg, base_model_path(base), progress)

    # Calibration and rule weights, on real posts the fine-tuning never saw.
    combiner, calib_auc = {}, {}
    if calib:
        texts = [model_input(r["text"], ruleset.watched) for r in calib]
        p = predict_probs(model, tokenizer, texts, cfg["max_length"]).double().clamp(1e-6, 1 - 1e-6).numpy()
        logits = np.log(p / (1 - p))
        yc = targets([r["label"] for r in calib])
        wc = np.asarray([cfg["inhouse_weight"] if r["kind"] == "in-house" else r["weight"] for r in calib])
        combiner = fit_combiner(logits, rule_features(texts, ruleset), yc, wc)
        real = np.asarray([r["kind"] == "real" for r in calib])
        calib_auc = {lab: round(_auc(logits[real, j], yc[real, j] > 0), 4) for j, lab in enumerate(LABELS)}

    tensors = {f"encoder.{k}": v for k, v in adapter_state(model.encoder).items()}
    tensors["head.weight"] = model.head.weight.detach().clone().contiguous()
    tensors["head.bias"] = model.head.bias.detach().clone().contiguous()
    weights_hash = hashlib.sha256(b"".join(t.numpy().tobytes() for _, t in sorted(tensors.items()))).hexdigest()[:10]
    version = f"caveat-minilm-{weights_hash}"
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(out / WEIGHTS_NAME), metadata={"format": "caveat-lora-v1"})
    per_source: dict[str, dict[str, int]] = {}
    for r in fit + calib:
        per_source.setdefault(r["source"], {}).setdefault(r["label"], 0)
        per_source[r["source"]][r["label"]] += 1
    config = {
        "version": version, "labels": list(LABELS), "base_model": "all-MiniLM-L6-v2",
        "lora_rank": cfg["rank"], "lora_alpha": cfg["alpha"], "lora_scale": cfg["alpha"] / cfg["rank"],
        "max_length": int(cfg["max_length"]), "pooling": "mean", "input": "model_input (rules' normalization)",
        "recipe": "LoRA fine-tune on real posts + in-house sample, then calibration on held-out real posts (classifiers/train.py)",
        "fine_tune_rows": len(fit), "calibration_rows": len(calib),
        "calibration_real_rows": sum(r["kind"] == "real" for r in calib), "rows_per_source": per_source,
        "labelled_rows_available": len(rows), "dropped_as_real_dev": counts["blocked_as_dev"],
        "hyperparameters": cfg, "calibration_auc": calib_auc, "train_seconds": round(time.time() - started, 1),
        "data_hash": hashlib.sha256(json.dumps(sorted((r["source"], r["source_id"], r["label"]) for r in fit + calib))
                                    .encode()).hexdigest()[:16],
    }
    (out / CONFIG_NAME).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    combine = {"combine": {"model_version": version,
                           "fitted_on": f"{len(calib)} held-out training posts ({sum(r['kind'] == 'real' for r in calib)} real, "
                                        "the rest in-house at lower weight; whole users/threads), never real-dev",
                           "labels": combiner}}
    (out / COMBINE_NAME).write_text(yaml.safe_dump(combine, sort_keys=False), encoding="utf-8")
    write_model_card(out, config)
    return {"version": version, "seconds": config["train_seconds"], "rows": len(fit), "calibration_rows": len(calib),
            "calibration_auc": calib_auc, "combiner": combiner}


def write_model_card(out: Path, config: dict) -> None:
    """MODEL_CARD.md: what the model is, what it was trained on, and credit to every dataset used."""
    from classifiers.credits import credits_for
    hp = config["hyperparameters"]
    lines = [f"# {config['version']}", "",
             "Caveat's post classifier: the packaged all-MiniLM-L6-v2 encoder with LoRA adapters (rank "
             f"{hp['rank']}, layers {hp['lora_from_layer']}-5) and a sigmoid head over emergency, risky_self_treatment,",
             "unsupported_claim and promotion (benign = no label). Trained by `caveat train` (classifiers/train.py);",
             "scores are calibrated and combined with the keyword rules by `combine.yaml`, and operating points are",
             "chosen on real-dev by `caveat eval --write-thresholds`. Real-post numbers: README.md.", "",
             f"Fine-tuned on {config['fine_tune_rows']} rows, calibrated on {config['calibration_rows']} held-out posts "
             f"({config['calibration_real_rows']} real). Real-dev rows and their near-duplicates were excluded ({config['dropped_as_real_dev']} dropped).",
             "", "| source | " + " | ".join((*LABELS, "benign")) + " |", "|---|" + "---|" * (len(LABELS) + 1)]
    for source, per in sorted(config["rows_per_source"].items()):
        lines.append(f"| {source} | " + " | ".join(str(per.get(lab, 0)) for lab in (*LABELS, "benign")) + " |")
    lines += ["", "## Datasets credited", "",
              "Texts are not redistributed with Caveat; its repository holds `(source, source_id, label)` rows only, and",
              "the labels were mapped from each source's own labels or relabelled by hand. Licences as each source states:", ""]
    lines += [f"- **{s}**: {c}" for s, c in credits_for(sorted(s for s in config["rows_per_source"] if s != "in-house"))]
    lines += ["", "In-house examples: written for this project (`classifiers/data/GUIDE.md`).", ""]
    (out / "MODEL_CARD.md").write_text("\n".join(lines), encoding="utf-8")


def main(args) -> int:
    """`caveat train`."""
    try:
        result = train(args.out, data_dir=args.data_dir, base=args.base, policy_dir=getattr(args, "policy", None),
                       progress=not args.no_progress, seed=args.seed, epochs=args.epochs)
    except (DataMissing, ValueError) as exc:
        print(f"caveat: {exc}", file=sys.stderr)
        return 2
    print(f"model {result['version']} written to {args.out} in {result['seconds']} s "
          f"(fine-tuned on {result['rows']} rows, calibrated on {result['calibration_rows']} held-out posts)")
    if result["calibration_auc"]:
        print("ROC AUC on the held-out calibration posts: "
              + ", ".join(f"{k} {v:.3f}" for k, v in result["calibration_auc"].items()))
    print(f"next: caveat eval --model {args.out} --write-thresholds  (installs the combination, picks operating points "
          "on real-dev)")
    return 0
