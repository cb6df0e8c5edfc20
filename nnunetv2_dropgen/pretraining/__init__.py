"""Pretrain a domain-stable feature extractor from label maps, and measure how stable an extractor is.

Label maps (a folder such as an nnU-Net labelsTr, and/or synthetic ones) become a pool of structures;
every step composes new label maps from it, renders two views of random appearance and trains the
extractor with anatomix's supervised patch-contrastive loss. `nnunetv2_dropgen pretrain` is the command.
"""

from nnunetv2_dropgen.pretraining.composition import CompositionSettings, compose_label_maps
from nnunetv2_dropgen.pretraining.loop import (
    PretrainingError,
    PretrainResult,
    PretrainSettings,
    check_settings,
    pretrain,
    validate_patch_size,
)
from nnunetv2_dropgen.pretraining.loss import balanced_voxel_sample, supervised_contrastive_loss
from nnunetv2_dropgen.pretraining.objective import ContrastiveObjective, feature_levels
from nnunetv2_dropgen.pretraining.pool import (
    LabelMapError,
    StructurePool,
    held_out_pool,
    pool_from_folder,
    pool_from_shape_kinds,
    pool_from_synthetic,
    training_and_held_out_pools,
)
from nnunetv2_dropgen.pretraining.references import compare_stability
from nnunetv2_dropgen.pretraining.stability import (
    StabilityBenchmark,
    StabilityMetrics,
    StabilitySettings,
    measure_stability,
)
from nnunetv2_dropgen.pretraining.views import AppearanceSettings, render, render_views

__all__ = [
    "AppearanceSettings",
    "CompositionSettings",
    "ContrastiveObjective",
    "LabelMapError",
    "PretrainResult",
    "PretrainSettings",
    "PretrainingError",
    "StabilityBenchmark",
    "StabilityMetrics",
    "StabilitySettings",
    "StructurePool",
    "balanced_voxel_sample",
    "check_settings",
    "compare_stability",
    "compose_label_maps",
    "feature_levels",
    "held_out_pool",
    "measure_stability",
    "pool_from_folder",
    "pool_from_shape_kinds",
    "pool_from_synthetic",
    "pretrain",
    "render",
    "render_views",
    "supervised_contrastive_loss",
    "training_and_held_out_pools",
    "validate_patch_size",
]
