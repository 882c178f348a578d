"""Deltas on a frozen timm ViT: LoRA through PEFT, and a bottleneck adapter written here
(PEFT has no Houlsby adapter for arbitrary modules).

A delta is stored in PEFT's adapter layout, ``adapter_config.json`` +
``adapter_model.safetensors``, plus ``learngene.json`` with the base model's weight checksum
(a delta is never applied to another base) and the checksum of the delta file itself (a
corrupt file is refused, not half-loaded). The base passed in is never changed: every
function works on a copy, and ``rollback`` hands back weights byte-identical to the base.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn as nn

from learngene.core.errors import UserError
from learngene.core.io import file_sha256, load_tensors, state_dict_sha256

TARGETS = ("qkv", "proj", "fc1", "fc2")
CONFIG, WEIGHTS, META = "adapter_config.json", "adapter_model.safetensors", "learngene.json"
ADAPTER_TYPE = "LEARNGENE_BOTTLENECK"


def peft():
    """PEFT, imported only when a LoRA delta is made or applied (it brings transformers)."""
    try:
        import peft as _peft
    except ImportError:
        raise UserError("LoRA needs the PEFT library: pip install 'learngene[adapt]' (or pip install peft)") from None
    return _peft


def parse_targets(targets: str | list[str] | tuple[str, ...]) -> list[str]:
    items = [t.strip() for t in (targets.split(",") if isinstance(targets, str) else targets) if t.strip()]
    bad = [t for t in items if t not in TARGETS]
    if bad or not items:
        raise UserError(f"unknown --targets {bad[0] if bad else '(none)'!r} (choose from {', '.join(TARGETS)})")
    return items


def target_regex(targets: list[str]) -> str:
    """Only the transformer blocks' linears (not patch_embed.proj, not a stitch)."""
    attn = [t for t in targets if t in ("qkv", "proj")]
    mlp = [t for t in targets if t in ("fc1", "fc2")]
    alts = ([rf"attn\.(?:{'|'.join(attn)})"] if attn else []) + ([rf"mlp\.(?:{'|'.join(mlp)})"] if mlp else [])
    return rf".*blocks\.\d+\.(?:{'|'.join(alts)})"


class Bottleneck(nn.Module):
    """Houlsby et al. 2019: y + up(gelu(down(y))) on a sub-layer's output; ``up`` starts at
    zero, so the adapted model starts as the base."""

    def __init__(self, dim: int, rank: int):
        super().__init__()
        self.down = nn.Linear(dim, rank)
        self.act = nn.GELU()
        self.up = nn.Linear(rank, dim)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return y + self.up(self.act(self.down(y)))


class WithAdapter(nn.Module):
    """A block's attention or MLP followed by a bottleneck adapter."""

    def __init__(self, inner: nn.Module, dim: int, rank: int):
        super().__init__()
        self.inner = inner
        self.adapter = Bottleneck(dim, rank)

    def forward(self, x, *args, **kwargs):
        return self.adapter(self.inner(x, *args, **kwargs))


@dataclass
class Adapted:
    """A base with a delta attached. ``model`` runs it; ``rollback`` gives the base back."""

    model: nn.Module
    method: str
    config: dict
    base_head: nn.Module | None = None  # the base's own head, when the delta brings one
    meta: dict = field(default_factory=dict)

    @property
    def trainable(self) -> int:
        return sum(p.numel() for p in self.model.parameters() if p.requires_grad)


def _blocks_with(model: nn.Module) -> list[tuple[int, nn.Module]]:
    from timm.models.vision_transformer import Block

    return [(i, b) for i, b in enumerate(model.blocks) if isinstance(b, Block)]


class LoraDelta:
    """LoRA through PEFT: low-rank updates of the block linears, mergeable into the weights."""

    name = "lora"
    mergeable = True
    # the peak lr benchmarks/adapt.py picks (results/adapt.md): 3e-3 on the ancestor and on the
    # child with 10% of the data; 1e-2 sends the 12-block ancestor to chance
    default_lr = 3e-3

    def check(self) -> None:
        peft()  # a missing extra fails now, not after loading and training

    def attach(self, model: nn.Module, cfg: dict, alpha: float | None) -> nn.Module:
        cfg["lora_alpha"] = alpha if alpha is not None else 2 * cfg["r"]
        pcfg = peft().LoraConfig(
            r=cfg["r"],
            lora_alpha=cfg["lora_alpha"],
            lora_dropout=0.0,
            target_modules=target_regex(cfg["targets"]),
            modules_to_save=["head"] if cfg["train_head"] else None,
        )
        return peft().get_peft_model(model, pcfg)

    def state(self, ad: Adapted) -> dict:
        return peft().get_peft_model_state_dict(ad.model)

    def save(self, ad: Adapted, folder: Path) -> None:
        ad.model.save_pretrained(str(folder))
        (folder / "README.md").unlink(missing_ok=True)  # PEFT's model-card stub

    def load_state(self, ad: Adapted, sd: dict, folder: Path) -> None:
        res = peft().set_peft_model_state_dict(ad.model, sd)
        extra = list(getattr(res, "unexpected_keys", []))
        if extra:
            raise UserError(f"delta {folder} has tensors this model lacks, e.g. {extra[0]}")

    def merge(self, ad: Adapted) -> nn.Module:
        return copy.deepcopy(ad.model).merge_and_unload().eval()

    def remove(self, model: nn.Module) -> nn.Module:
        return model.unload()


class BottleneckDelta:
    """Houlsby bottleneck adapters after each block's attention and MLP (written here:
    PEFT has none for arbitrary modules); nonlinear, so applied, never merged."""

    name = "adapter"
    mergeable = False
    default_lr = 1e-2  # the zero-initialised bottleneck wants a larger step (benchmarks/adapt.py)

    def check(self) -> None:
        pass

    def attach(self, model: nn.Module, cfg: dict, alpha: float | None) -> nn.Module:
        for p in model.parameters():
            p.requires_grad_(False)
        for _, blk in _blocks_with(model):
            dim = blk.norm1.normalized_shape[0]
            if {"qkv", "proj"} & set(cfg["targets"]):
                blk.attn = WithAdapter(blk.attn, dim, cfg["r"])
            if {"fc1", "fc2"} & set(cfg["targets"]):
                blk.mlp = WithAdapter(blk.mlp, dim, cfg["r"])
        if cfg["train_head"]:
            for p in model.head.parameters():
                p.requires_grad_(True)
        return model

    def state(self, ad: Adapted) -> dict:
        return {
            k: v
            for k, v in ad.model.state_dict().items()
            if ".adapter." in k or (ad.config["train_head"] and k.startswith("head."))
        }

    def save(self, ad: Adapted, folder: Path) -> None:
        from safetensors.torch import save_file

        save_file(delta_state(ad), str(folder / WEIGHTS))
        (folder / CONFIG).write_text(
            json.dumps(
                {
                    "peft_type": ADAPTER_TYPE,
                    "r": ad.config["r"],
                    "target_modules": ad.config["targets"],
                    "modules_to_save": ["head"] if ad.config["train_head"] else None,
                },
                indent=2,
            )
        )

    def load_state(self, ad: Adapted, sd: dict, folder: Path) -> None:
        try:
            res = ad.model.load_state_dict(sd, strict=False)
        except RuntimeError as e:
            raise UserError(f"delta {folder} does not fit this model: {str(e).splitlines()[0][:160]}") from None
        if res.unexpected_keys:
            raise UserError(f"delta {folder} has tensors this model lacks, e.g. {res.unexpected_keys[0]}")

    def merge(self, ad: Adapted) -> nn.Module:
        raise UserError(
            "only LoRA deltas merge into the weights (a bottleneck adapter is nonlinear); apply it unmerged"
        )

    def remove(self, model: nn.Module) -> nn.Module:
        for _, blk in _blocks_with(model):
            for name in ("attn", "mlp"):
                mod = getattr(blk, name)
                if isinstance(mod, WithAdapter):
                    setattr(blk, name, mod.inner)
        return model


# the delta methods (learngene.core.registries.DELTA_METHODS names them): a new one is a class
# with this interface, an instance here, and one registry line
LORA, ADAPTER = LoraDelta(), BottleneckDelta()


def method_of(name: str):
    from learngene.core.registries import DELTA_METHODS

    DELTA_METHODS.check(name, "--method")
    return DELTA_METHODS[name]


def attach(
    base: nn.Module,
    method: str,
    rank: int = 8,
    targets=TARGETS,
    train_head: bool = False,
    num_classes: int | None = None,
    alpha: float | None = None,
    seed: int = 0,
) -> Adapted:
    """A copy of ``base`` with a fresh delta; only the delta (and the head with
    ``train_head``) is trainable. ``num_classes`` other than the base's needs a new head."""
    kind = method_of(method)
    targets = parse_targets(targets)
    dims = [
        min(m.in_features, m.out_features)
        for n, m in base.named_modules()
        if isinstance(m, nn.Linear) and ".blocks." in f".{n}" and n.rsplit(".", 1)[-1] in targets
    ]
    if rank < 1 or (dims and rank > min(dims)):
        raise UserError(
            f"--rank {rank} must be from 1 to {min(dims) if dims else '?'}, the narrowest layer it adapts "
            "(a larger rank adds nothing a full update would not)"
        )
    torch.manual_seed(seed)
    model = copy.deepcopy(base)
    base_head = None
    if num_classes is not None and num_classes != model.num_classes and not train_head:
        raise UserError(
            f"the task has {num_classes} classes but the model's head has {model.num_classes}: pass --train-head"
        )
    if train_head:
        base_head = copy.deepcopy(model.head)
        if num_classes is not None and num_classes != model.num_classes:
            model.reset_classifier(num_classes)
    cfg = {
        "method": method,
        "r": rank,
        "targets": targets,
        "train_head": train_head,
        "num_classes": int(num_classes or model.num_classes),
    }
    model = kind.attach(model, cfg, alpha)
    return Adapted(model, method, cfg, base_head)


def delta_state(ad: Adapted) -> dict[str, torch.Tensor]:
    """The delta's tensors only (what is stored)."""
    return {k: v.detach().cpu().contiguous() for k, v in method_of(ad.method).state(ad).items()}


def save(ad: Adapted, folder: Path, meta: dict) -> None:
    """Write the delta into ``folder`` (an empty staging folder)."""
    folder = Path(folder)
    method_of(ad.method).save(ad, folder)
    full = {**meta, **ad.config, "delta_sha256": file_sha256(folder / WEIGHTS)}
    (folder / META).write_text(json.dumps(full, indent=2))


def read_meta(folder: Path) -> dict:
    folder = Path(folder)
    for name in (CONFIG, WEIGHTS, META):
        if not (folder / name).is_file():
            raise UserError(f"not a learngene delta (no {name}): {folder}")
    from learngene.core.localdir import read_json

    meta = read_json(folder / META, "delta metadata")
    missing = [
        k
        for k in ("method", "r", "targets", "train_head", "num_classes", "base_checksum", "delta_sha256")
        if not isinstance(meta, dict) or k not in meta
    ]
    if missing:
        raise UserError(f"delta metadata {folder / META} lacks {missing[0]!r}")
    method_of(meta["method"])
    return meta


def load(base: nn.Module, folder: Path, base_checksum: str | None = None) -> Adapted:
    """``base`` with the stored delta attached (``base`` itself is not changed). Refuses a
    delta made for other weights, and a delta file that is not what was written."""
    folder = Path(folder)
    meta = read_meta(folder)
    have = base_checksum or state_dict_sha256(base.state_dict())
    if meta.get("base_checksum") != have:
        raise UserError(
            f"delta {folder} was trained on base {str(meta.get('base_checksum'))[:12]} "
            f"({meta.get('base', '?')}), not on this model ({have[:12]}): refusing to apply it"
        )
    if file_sha256(folder / WEIGHTS) != meta.get("delta_sha256"):
        raise UserError(f"delta file {folder / WEIGHTS} does not match its recorded checksum (corrupt or edited)")
    sd = load_tensors(folder / WEIGHTS)
    ad = attach(
        base,
        meta["method"],
        meta["r"],
        meta["targets"],
        meta["train_head"],
        meta["num_classes"],
        alpha=meta.get("lora_alpha"),
    )
    method_of(ad.method).load_state(ad, sd, folder)
    ad.model.eval()
    ad.meta = meta
    return ad


def merge(ad: Adapted) -> nn.Module:
    """The delta folded into the weights: a plain timm model for deployment (LoRA only)."""
    return method_of(ad.method).merge(ad)


def rollback(ad: Adapted) -> nn.Module:
    """Remove the delta: the base, weights byte-identical to before."""
    model = method_of(ad.method).remove(copy.deepcopy(ad.model))
    if ad.base_head is not None:
        model.head = copy.deepcopy(ad.base_head)
        model.num_classes = ad.base_head.out_features if isinstance(ad.base_head, nn.Linear) else model.num_classes
    for p in model.parameters():
        p.requires_grad_(True)
    return model.eval()


def bytes_of(sd: dict[str, torch.Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in sd.values())


def check_name(name: str) -> str:
    from learngene.core.io import check_name as safe

    return safe(name, "--name")
