"""Plans variants DropGen needs, as nnU-Net plans files used with `-p`: per-image normalization, a CPU-sized network."""

from nnunetv2_dropgen.plans.variants import (
    CPU_FIRST_STAGE_FEATURES,
    CT_NORMALIZATION,
    CTStatisticsWarning,
    PlansError,
    PlansVariant,
    configurations_to_preprocess,
    ct_channels,
    derive_plans,
    holds_preprocessed_data,
    preprocessed_as,
    read_fingerprint,
    read_plans,
    resolved_configuration,
    write_plans,
    write_variant,
)

__all__ = [
    "CPU_FIRST_STAGE_FEATURES",
    "CT_NORMALIZATION",
    "CTStatisticsWarning",
    "PlansError",
    "PlansVariant",
    "configurations_to_preprocess",
    "ct_channels",
    "derive_plans",
    "holds_preprocessed_data",
    "preprocessed_as",
    "read_fingerprint",
    "read_plans",
    "resolved_configuration",
    "write_plans",
    "write_variant",
]
