"""Plans variants for DropGen, written the way nnU-Net asks for custom plans: a new plans file beside nnU-Net's.

nnU-Net plans experiments only with planners inside its own package, but any plans file in a dataset's
preprocessed folder can be used with `-p <plans name>` (`nnUNetv2_preprocess -plans_name`, `nnUNetv2_train
-p`, `nnUNetv2_predict -p`). Two variants matter for DropGen:

- per-image normalization: nnU-Net gives a channel named CT `CTNormalization`, which clips every image,
  test images of any modality included, to the training set's foreground percentiles and z-scores it with
  the training set's statistics. An MR test image is then mostly saturated before the extractor sees it.
  Per-image z-scoring (`ZScoreNormalization`) makes the image channel and the extractor's input depend on
  the image alone, so a CT-trained DropGen model can segment MR (the paper's AMOS and TopCoW settings).
  The data are preprocessed anew (their own data identifier).
- a narrow network for CPUs: every stage's width scaled down from nnU-Net's (32 features in the first
  stage) to a few, same depth, patch and batch; preprocessing is unchanged, so the data are shared.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nnunetv2_dropgen.evaluation.files import write_json_atomic

CT_NORMALIZATION = "CTNormalization"
PER_IMAGE_NORMALIZATION = "ZScoreNormalization"
MASK_FOR_NORM_BELOW = 3 / 4
"""nnU-Net's planner normalizes a z-scored channel inside the non-zero mask when cropping to it leaves less than this
share of the image (median over cases; `determine_normalization_scheme_and_whether_mask_is_used_for_norm`)."""
CPU_FIRST_STAGE_FEATURES = 8
"""First-stage width of the CPU plans: 4x narrower than nnU-Net's 32 (about 16x fewer multiply-adds)."""


class CTStatisticsWarning(UserWarning):
    """A DropGen model built to normalize with its training set's CT statistics: said when nnU-Net's predictor
    builds it (training says it in its log, with the commands; evaluate in its notes)."""


class PlansError(ValueError):
    """Plans that cannot be derived; the message says what is wrong and what to do."""


@dataclass(frozen=True)
class PlansVariant:
    """What to change in the source plans. first_stage_features: None keeps the network's widths."""

    per_image_normalization: bool = False
    first_stage_features: int | None = None

    def default_name(self, source: str) -> str:
        """nnU-Net-style plans name: 'nnUNetPlans' -> 'nnUNetPlansPerImageNorm', 'nnUNetPlansCPU', ..."""
        parts = [source]
        if self.per_image_normalization:
            parts.append("PerImageNorm")
        if self.first_stage_features == CPU_FIRST_STAGE_FEATURES:
            parts.append("CPU")
        elif self.first_stage_features is not None:
            parts.append(f"F{self.first_stage_features}")
        return "".join(parts)


def read_plans(folder: Path, name: str) -> dict[str, Any]:
    path = folder / f"{name}.json"
    if not path.is_file():
        available = sorted(p.stem for p in folder.glob("*Plans*.json"))
        raise PlansError(
            f"there is no plans file {path}; plan the dataset first (nnUNetv2_plan_and_preprocess -d ID) or name "
            f"one of the plans there: {', '.join(available) or 'none'}."
        )
    return json.loads(path.read_text())


def read_fingerprint(folder: Path) -> dict[str, Any]:
    """The dataset fingerprint nnU-Net's planning wrote in the dataset's preprocessed folder."""
    path = folder / "dataset_fingerprint.json"
    if not path.is_file():
        raise PlansError(
            f"there is no {path}; nnU-Net writes it when it plans the dataset: run nnUNetv2_plan_and_preprocess -d ID "
            "--no_pp (or nnUNetv2_extract_fingerprint -d ID) first."
        )
    return json.loads(path.read_text())


def holds_preprocessed_data(folder: Path) -> bool:
    """Whether a configuration's data folder holds files (nnUNetv2_preprocess has filled it)."""
    return folder.is_dir() and any(path.is_file() for path in folder.iterdir())


def ct_channels(plans: dict[str, Any], configuration: str) -> list[int]:
    """Indices of the image channels the configuration normalizes with the training set's CT statistics."""
    config = resolved_configuration(plans, configuration)
    return [i for i, scheme in enumerate(config.get("normalization_schemes", [])) if scheme == CT_NORMALIZATION]


def preprocessed_as(plans: dict[str, Any], configuration: str) -> str:
    """The configuration whose preprocessed data `configuration` reads: itself when it names its own data
    identifier, else the configuration it inherits from (nnU-Net's cascade reads 3d_fullres's data)."""
    configurations = plans["configurations"]
    while "data_identifier" not in configurations[configuration]:
        configuration = configurations[configuration]["inherits_from"]
    return configuration


def configurations_to_preprocess(plans: dict[str, Any], configuration: str) -> list[str]:
    """Every configuration whose preprocessed data training `configuration` needs: its own data and, for a
    cascade, those of its previous stages (which must be trained first)."""
    needed = []
    while configuration is not None:
        needed.append(preprocessed_as(plans, configuration))
        configuration = resolved_configuration(plans, configuration).get("previous_stage")
    return list(dict.fromkeys(needed))


def resolved_configuration(plans: dict[str, Any], configuration: str) -> dict[str, Any]:
    """A configuration with what it inherits filled in (as nnU-Net's PlansManager resolves it)."""
    configurations = plans["configurations"]
    if configuration not in configurations:
        raise PlansError(f"the plans have no configuration {configuration!r}; they have {', '.join(configurations)}.")
    config = copy.deepcopy(configurations[configuration])
    parent = config.get("inherits_from")
    return {**resolved_configuration(plans, parent), **config} if parent else config


def derive_plans(
    plans: dict[str, Any], name: str, variant: PlansVariant, fingerprint: dict[str, Any] | None = None
) -> dict[str, Any]:
    """A copy of `plans` called `name` with the variant's changes in every configuration that has them.

    Configurations whose preprocessing changes get a data identifier of their own (`<name>_<configuration>`),
    so nnU-Net preprocesses them anew instead of reusing data normalized the other way. Per-image normalization
    needs the dataset's `fingerprint` (dataset_fingerprint.json): a channel switched to z-scoring uses the non-zero
    mask as nnU-Net's planner would have decided for it (CTNormalization never does).
    """
    if not variant.per_image_normalization and variant.first_stage_features is None:
        raise PlansError("nothing to change: ask for --per-image-normalization and/or --features N (e.g. --cpu).")
    if variant.first_stage_features is not None and variant.first_stage_features < 1:
        raise PlansError(
            f"--features must be a positive number of first-stage features; got {variant.first_stage_features}."
        )
    if variant.per_image_normalization and fingerprint is None:
        raise PlansError("per-image normalization needs the dataset fingerprint (dataset_fingerprint.json).")
    derived = copy.deepcopy(plans)
    derived["plans_name"] = name
    for config in derived["configurations"].values():
        if variant.per_image_normalization and "normalization_schemes" in config:
            _normalize_per_image(config, fingerprint)
        if variant.first_stage_features is not None:
            _narrow(config, variant.first_stage_features)
    if variant.per_image_normalization:
        _separate_renormalized_data(plans, derived, name)
    return derived


def _normalize_per_image(config: dict[str, Any], fingerprint: dict[str, Any]) -> None:
    """CTNormalization -> per-image z-scoring, channel by channel, with nnU-Net's choice of the non-zero mask."""
    schemes = config["normalization_schemes"]
    masked = fingerprint["median_relative_size_after_cropping"] < MASK_FOR_NORM_BELOW
    use_mask = list(config.get("use_mask_for_norm", [False] * len(schemes)))
    for channel, scheme in enumerate(schemes):
        if scheme == CT_NORMALIZATION:
            schemes[channel] = PER_IMAGE_NORMALIZATION
            use_mask[channel] = masked
    if "use_mask_for_norm" in config:
        config["use_mask_for_norm"] = use_mask


def _separate_renormalized_data(source: dict[str, Any], derived: dict[str, Any], name: str) -> None:
    """Give a data identifier of its own (`<name>_<configuration>`) to every configuration whose arrays would now
    be normalized otherwise, so nnU-Net preprocesses them anew instead of reusing the source's. A configuration
    that inherits its normalization (a custom one with a data identifier of its own) counts as well; one that
    reads another's data (the cascade) keeps doing so when that data is normalized as it is."""

    def schemes(plans: dict[str, Any], configuration: str) -> list[str]:
        return resolved_configuration(plans, configuration).get("normalization_schemes", [])

    configurations = derived["configurations"]
    changed = [c for c in configurations if schemes(derived, c) != schemes(source, c)]
    if not changed:
        raise PlansError(
            f"no configuration of plans {source.get('plans_name')!r} uses {CT_NORMALIZATION}: they already "
            "normalize each image on its own, so --per-image-normalization would change nothing; drop it."
        )
    for configuration in changed:
        if "data_identifier" in configurations[configuration]:
            configurations[configuration]["data_identifier"] = f"{name}_{configuration}"
    for configuration in changed:
        if schemes(derived, configuration) != schemes(derived, preprocessed_as(derived, configuration)):
            configurations[configuration]["data_identifier"] = f"{name}_{configuration}"


def _narrow(config: dict[str, Any], first: int) -> None:
    """Scale every stage's width so the first has `first` features, keeping the stages' ratios."""
    architecture = config.get("architecture")
    if not architecture:
        return
    kwargs = architecture["arch_kwargs"]
    widths = kwargs.get("features_per_stage")
    if not widths:
        raise PlansError(
            f"the network {architecture.get('network_class_name')} has no features_per_stage to narrow; "
            "derive the CPU plans from nnU-Net's default or ResEnc plans."
        )
    kwargs["features_per_stage"] = [max(1, round(w * first / widths[0])) for w in widths]


def write_plans(folder: Path, plans: dict[str, Any]) -> Path:
    """Write `plans` as `<plans_name>.json` in the dataset's preprocessed folder (atomically)."""
    return write_json_atomic(folder / f"{plans['plans_name']}.json", plans)


def write_variant(folder: Path, variant: PlansVariant, source: str = "nnUNetPlans", name: str | None = None) -> str:
    """Derive `variant` from the plans `source` in a dataset's preprocessed folder, write it, return its name."""
    name = name or variant.default_name(source)
    fingerprint = read_fingerprint(folder) if variant.per_image_normalization else None
    write_plans(folder, derive_plans(read_plans(folder, source), name, variant, fingerprint))
    return name
