"""Measuring a classifier: top-k accuracy over a loader, pre-logit features, and DINO's weighted
kNN probe of them."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


def topk_hits(logits: torch.Tensor, labels: torch.Tensor, topk=(1, 5)) -> dict[int, int]:
    """How many labels are among the k highest logits, for each k (k capped at #classes)."""
    k_max = min(max(topk), logits.shape[-1])
    hits = logits.topk(k_max, dim=-1).indices == labels[:, None]
    return {k: int(hits[:, : min(k, k_max)].any(-1).sum()) for k in topk}


@torch.no_grad()
def split_metrics(model: nn.Module, dm) -> dict[str, float]:
    """What every trained model records of itself: test top1 / top5 and validation top1 (rounded)."""
    test, val = evaluate(model, dm.test_dataloader()), evaluate(model, dm.val_dataloader())
    return {"test_top1": round(test["top1"], 2), "test_top5": round(test["top5"], 2), "val_top1": round(val["top1"], 2)}


def evaluate(model: nn.Module, loader, device: str | torch.device = "cpu", topk=(1, 5)) -> dict[str, float]:
    """top-k accuracy (percent) of a classifier over a loader."""
    model.eval().to(device)
    correct = {k: 0 for k in topk}
    n = 0
    for x, y in loader:
        x, y = x.to(device), y.to(device)
        for k, h in topk_hits(model(x), y, topk).items():
            correct[k] += h
        n += len(y)
    return {f"top{k}": 100.0 * correct[k] / max(n, 1) for k in topk}


@torch.no_grad()
def features_and_logits(
    model: nn.Module, loader, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Pre-logit features, logits and labels over a loader, in one pass (timm's
    forward_features -> forward_head(pre_logits=True) -> head)."""
    model.eval().to(device)
    feats, logits, labels = [], [], []
    for x, y in loader:
        f = model.forward_head(model.forward_features(x.to(device)), pre_logits=True)
        feats.append(f.float().cpu())
        logits.append(model.head(f).float().cpu())
        labels.append(y)
    return torch.cat(feats), torch.cat(logits), torch.cat(labels)


def knn_top1(
    train_f: torch.Tensor,
    train_y: torch.Tensor,
    test_f: torch.Tensor,
    test_y: torch.Tensor,
    k: int = 20,
    temperature: float = 0.07,
) -> float:
    """DINO's weighted kNN classifier on L2-normalised features: the k nearest training
    features by cosine similarity (faiss IndexFlatIP) vote with weight exp(sim / T)."""
    import faiss  # lazily: faiss and torch can clash over OpenMP depending on import order

    tr = F.normalize(train_f.float(), dim=1).numpy()
    te = F.normalize(test_f.float(), dim=1).numpy()
    index = faiss.IndexFlatIP(tr.shape[1])
    index.add(tr)
    k = min(k, len(tr))
    sims, idx = index.search(te, k)
    sims, idx = torch.from_numpy(sims), torch.from_numpy(idx).long()
    n_cls = int(max(train_y.max(), test_y.max())) + 1
    votes = torch.zeros(len(te), n_cls)
    votes.scatter_add_(1, train_y[idx], (sims / temperature).exp())
    return round(100 * (votes.argmax(1) == test_y).float().mean().item(), 2)
