"""The trained unit: an extractor, its projection heads and the contrastive loss over its feature levels.

One module, so DistributedDataParallel wraps extractor and heads together and averages both gradients.
The levels are those `forward_levels(x)` returns (anatomix: each decoder level, then the final output);
a module without it is supervised on its final output only.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from nnunetv2_dropgen.pretraining.heads import HEAD_WIDTH, ProjectionHeads
from nnunetv2_dropgen.pretraining.loss import (
    SAMPLES_PER_LEVEL,
    TEMPERATURE,
    balanced_voxel_sample,
    supervised_contrastive_loss,
)


def feature_levels(extractor: nn.Module, images: torch.Tensor) -> list[torch.Tensor]:
    """The supervised feature maps of `extractor` for `images`, coarsest first, the final output last."""
    forward_levels = getattr(extractor, "forward_levels", None)
    return list(forward_levels(images)) if callable(forward_levels) else [extractor(images)]


@torch.no_grad()
def level_channels(extractor: nn.Module, size: int) -> list[int]:
    """Channels of each supervised level, from one forward of a (1, 1, size, size, size) zero volume in eval mode."""
    was_training = extractor.training
    parameter = next(extractor.parameters(), None)
    device = parameter.device if parameter is not None else torch.device("cpu")
    extractor.eval()
    try:
        return [
            level.shape[1] for level in feature_levels(extractor, torch.zeros((1, 1, size, size, size), device=device))
        ]
    finally:
        extractor.train(was_training)


class ContrastiveObjective(nn.Module):
    """Extractor + one projection head per level; `forward` returns the loss averaged over the levels."""

    def __init__(
        self,
        extractor: nn.Module,
        channels: list[int],
        head_width: int = HEAD_WIDTH,
        samples_per_level: int = SAMPLES_PER_LEVEL,
        temperature: float = TEMPERATURE,
    ) -> None:
        super().__init__()
        self.extractor = extractor
        self.heads = ProjectionHeads(channels, head_width)
        self.samples_per_level = samples_per_level
        self.temperature = temperature

    def forward(self, views: torch.Tensor, labels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Loss for (2B, 1, *spatial) views (all first views, then all second views) of (B, 1, *spatial) labels.

        Both views of a map are in one batch, so batch normalisation sees both appearances together.
        """
        batch = labels.shape[0]
        losses = []
        for index, level in enumerate(feature_levels(self.extractor, views)):
            level_labels = F.interpolate(labels.float(), size=level.shape[2:], mode="nearest").long().flatten(1)
            chosen = balanced_voxel_sample(level_labels, self.samples_per_level, generator)
            sampled = torch.gather(level.flatten(2), 2, chosen.repeat(2, 1)[:, None, :].expand(-1, level.shape[1], -1))
            count = chosen.shape[1]
            projected = self.heads(index, sampled.transpose(1, 2).reshape(2 * batch * count, -1))
            embeddings = projected.view(2, batch, count, -1).transpose(0, 1)
            losses.append(
                supervised_contrastive_loss(embeddings, torch.gather(level_labels, 1, chosen), self.temperature)
            )
        return torch.stack(losses).mean()
