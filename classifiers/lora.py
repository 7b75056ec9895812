"""Low-rank adapters (LoRA) for the encoder's linear layers, written out so the artifact stays tiny.

Training wraps chosen `nn.Linear` layers; serving merges the adapters into the base weights so inference
costs exactly what the plain encoder costs.
"""
from __future__ import annotations

import math

import torch
from torch import nn

# Linear layers of a BERT-style encoder that get adapters (attention projections and the feed-forward pair).
TARGETS = ("attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense",
           "intermediate.dense", "output.dense")


class LoRALinear(nn.Module):
    """`base(x) + scale * B(A(dropout(x)))`, with the base frozen and B starting at zero."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float, dropout: float = 0.0):
        super().__init__()
        self.base = base
        self.rank = rank
        self.scale = alpha / rank
        self.lora_a = nn.Parameter(torch.empty(rank, base.in_features))
        self.lora_b = nn.Parameter(torch.zeros(base.out_features, rank))
        nn.init.kaiming_uniform_(self.lora_a, a=math.sqrt(5))
        self.dropout = nn.Dropout(dropout)
        for p in self.base.parameters():
            p.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The base output plus the low-rank update."""
        return self.base(x) + (self.dropout(x) @ self.lora_a.t() @ self.lora_b.t()) * self.scale


def _layer_index(name: str) -> int:
    parts = f".{name}".split(".layer.", 1)[1].split(".", 1)
    return int(parts[0]) if parts[0].isdigit() else 0


def _target_names(model: nn.Module, from_layer: int = 0) -> list[str]:
    return [name for name, mod in model.named_modules()
            if isinstance(mod, nn.Linear) and any(name.endswith(t) for t in TARGETS) and ".layer." in f".{name}"
            and _layer_index(name) >= from_layer]


def add_adapters(model: nn.Module, rank: int, alpha: float, dropout: float = 0.0, from_layer: int = 0) -> list[str]:
    """Wrap the target linear layers of `model` from layer `from_layer` up in a LoRALinear; returns the names.

    Layers below `from_layer` stay frozen and need no backward pass, which makes each training step cheaper.
    """
    names = _target_names(model, from_layer)
    for name in names:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        setattr(parent, child, LoRALinear(getattr(parent, child), rank, alpha, dropout))
    return names


def adapter_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """Only the adapter tensors, keyed '<layer name>.lora_a|lora_b'."""
    out = {}
    for name, mod in model.named_modules():
        if isinstance(mod, LoRALinear):
            out[f"{name}.lora_a"] = mod.lora_a.detach().clone().contiguous()
            out[f"{name}.lora_b"] = mod.lora_b.detach().clone().contiguous()
    return out


def merge_adapters(model: nn.Module, tensors: dict[str, torch.Tensor], scale: float) -> int:
    """Add `scale * B @ A` into the plain linear layers of `model`; returns how many layers changed."""
    merged = 0
    for key, a in tensors.items():
        if not key.endswith(".lora_a"):
            continue
        name = key[: -len(".lora_a")]
        b = tensors[f"{name}.lora_b"]
        layer = model.get_submodule(name)
        if not isinstance(layer, nn.Linear):
            raise ValueError(f"adapter for '{name}' does not match a linear layer of the base model")
        with torch.no_grad():
            layer.weight += (b.float() @ a.float()) * scale
        merged += 1
    return merged
