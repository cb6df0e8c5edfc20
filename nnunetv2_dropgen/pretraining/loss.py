"""The supervised patch-contrastive loss anatomix was pretrained with, and label-balanced voxel sampling.

The same voxels are sampled in both views of a label map. For each sampled voxel (the anchor) every other
sampled voxel of the same label, in either view, is a positive (its twin in the other view always is);
all other sampled voxels are negatives. The loss is the mean over anchors and positives of
-log softmax(cosine / temperature), the anchor itself left out of the softmax.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

TEMPERATURE = 0.33
"""anatomix's temperature (its pretraining script's default)."""

SAMPLES_PER_LEVEL = 512
"""Voxels sampled per feature level and label map (anatomix: 512)."""


def balanced_voxel_sample(labels: torch.Tensor, count: int, generator: torch.Generator) -> torch.Tensor:
    """(B, n) distinct voxel indices per map of (B, S) labels, n = min(count, S).

    Each voxel is drawn with weight 1 / (voxels of its label), so every label present is about equally
    represented; uniform sampling would be mostly background.
    """
    batch, size = labels.shape
    counts = torch.zeros((batch, int(labels.max()) + 1), device=labels.device)
    counts.scatter_add_(1, labels, torch.ones_like(labels, dtype=counts.dtype))
    weights = 1.0 / torch.gather(counts, 1, labels)
    return torch.multinomial(weights, min(count, size), replacement=False, generator=generator)


def supervised_contrastive_loss(
    embeddings: torch.Tensor, labels: torch.Tensor, temperature: float = TEMPERATURE
) -> torch.Tensor:
    """Loss of (B, 2, n, E) embeddings of n voxels seen in 2 views of B label maps, with (B, n) labels.

    Embeddings are L2-normalised here; computed in float32 whatever the autocast dtype.
    """
    batch, views, count, _ = embeddings.shape
    z = F.normalize(embeddings.float(), dim=-1).flatten(1, 2)  # (B, views * n, E)
    logits = z @ z.transpose(1, 2) / temperature
    identity = torch.eye(views * count, dtype=torch.bool, device=z.device)
    logits = logits.masked_fill(identity, float("-inf"))
    log_prob = logits - torch.logsumexp(logits, dim=2, keepdim=True)
    tiled = labels.repeat(1, views)
    positives = (tiled[:, :, None] == tiled[:, None, :]) & ~identity
    per_anchor = log_prob.masked_fill(~positives, 0.0).sum(dim=2) / positives.sum(dim=2)
    return -per_anchor.mean()
