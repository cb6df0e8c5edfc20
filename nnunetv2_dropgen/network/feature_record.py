"""What shaped a network's features, recorded in its state_dict so a checkpoint refuses another pipeline.

nnU-Net saves and loads `network.state_dict()`; `DropGenNetwork.get_extra_state` puts this record in it,
so every checkpoint carries it without any change to nnU-Net's saving or loading.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from nnunetv2_dropgen.feature_extractors import ExtractorSpec

RECORD_FORMAT = "nnunetv2-dropgen-feature-record/1"
SHAPING_FIELDS = ("extractor", "preprocessing", "normalization", "feature_channels", "options")
"""The fields that change the features a backbone sees; a checkpoint must agree on all of them."""


class FeaturePipelineMismatch(RuntimeError):
    """A checkpoint's features were computed differently from what the current code builds."""


@dataclass(frozen=True)
class FeatureRecord:
    """Extractor name, input preprocessing and output normalization identifiers, feature channels, and the
    sha256 and origin of the extractor weights training started from (None until weights are loaded)."""

    extractor: str
    preprocessing: str
    normalization: str
    feature_channels: int
    weights_sha256: str | None = None
    weights_origin: str | None = None
    options: tuple[str, ...] = ()
    """The authors' behaviours the network follows (network.options); checkpoints from before record none."""

    @classmethod
    def of(cls, spec: ExtractorSpec, normalization: str | None = None, options: tuple[str, ...] = ()) -> FeatureRecord:
        return cls(
            spec.name,
            spec.preprocessing.identifier,
            normalization or spec.normalization.identifier,
            spec.feature_channels,
            options=tuple(options),
        )

    @classmethod
    def legacy(cls, spec: ExtractorSpec) -> FeatureRecord:
        """What nnunetv2-dropgen 0.1.0, which recorded nothing, computed: min-max input, instance norm eps 1e-5."""
        return cls(spec.name, "minmax-per-patch(eps=1e-08)", "instance-norm(eps=1e-05)", spec.feature_channels)

    def with_weights(self, sha256: str | None, origin: str | None) -> FeatureRecord:
        return replace(self, weights_sha256=sha256, weights_origin=origin)

    def to_state(self) -> dict[str, Any]:
        state = {"format": RECORD_FORMAT, **asdict(self), "options": list(self.options)}
        if not self.options:
            del state["options"]  # as checkpoints without options were written: readable by earlier versions
        return state

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> FeatureRecord:
        if not isinstance(state, dict) or state.get("format") != RECORD_FORMAT:
            raise FeaturePipelineMismatch(
                f"The checkpoint's DropGen feature record is not one this version reads (format "
                f"{state.get('format') if isinstance(state, dict) else type(state).__name__!r}, expected "
                f"{RECORD_FORMAT!r}); it was written by another nnunetv2-dropgen version: predict with that version."
            )
        values = {f.name: state.get(f.name) for f in fields(cls)}
        values["options"] = tuple(values["options"] or ())  # absent before options existed: none
        return cls(**values)

    def check_matches(self, built: FeatureRecord) -> None:
        """Raise a sentence naming every difference between this (saved) record and what the code built."""
        differences = [
            f"{name} {getattr(self, name)!r} in the checkpoint, {getattr(built, name)!r} now"
            for name in SHAPING_FIELDS
            if getattr(self, name) != getattr(built, name)
        ]
        if differences:
            raise FeaturePipelineMismatch(
                "This checkpoint was trained on features computed differently from what this trainer builds now ("
                + "; ".join(differences)
                + "). Predicting with it, or fine-tuning from it, would silently change its results. Use the "
                "trainer name (extractor and options) and the nnunetv2-dropgen version it was trained with, or train "
                "again."
            )
