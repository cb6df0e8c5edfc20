"""Load an extractor's pretrained weights into its architecture, or say exactly why they do not fit."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from nnunetv2_dropgen.feature_extractors.registry import ExtractorSpec, get_extractor_spec
from nnunetv2_dropgen.weights import (
    ResolvedWeights,
    WeightsArchitectureMismatch,
    WeightsMissing,
    env_var_for,
    load_state_dict_file,
    resolve_weights,
)


def load_pretrained(
    name: str,
    module: nn.Module,
    explicit: str | os.PathLike | None = None,
    *,
    download: bool = True,
    revision: str | None = None,
) -> ResolvedWeights | None:
    """Resolve extractor `name`'s weights (argument, DROPGEN_WEIGHTS_<NAME>, its source) and load them strictly.

    Returns None when the extractor's build function provides the weights (`pretrained_by_build`) and none
    were named. Raises WeightsMissing when the extractor has no weights source and none were named: its
    build function's random weights, frozen, would give features that carry nothing.
    """
    spec = get_extractor_spec(name)
    if spec.weights is None and explicit is None and not os.environ.get(env_var_for(name)):
        if spec.pretrained_by_build:
            return None
        raise WeightsMissing(
            f"{name} has no published or packaged weights and none were given, so its features would come from "
            f"the random weights of its build function. Set {env_var_for(name)}=/path/to/weights.pth (a "
            f"state_dict), or, if build itself returns the pretrained model, register the extractor with "
            f"ExtractorSpec(..., pretrained_by_build=True)."
        )
    resolved = resolve_weights(name, spec.weights, explicit, download=download, revision=revision)
    state_dict = load_state_dict_file(resolved.path, name, resolved.sha256)
    try:
        module.load_state_dict(state_dict, strict=True)
    except RuntimeError:
        raise WeightsArchitectureMismatch(_mismatch_sentence(spec, module, state_dict, resolved.path)) from None
    return resolved


def check_fits(name: str, path: Path, shown: Path | None = None) -> None:
    """WeightsArchitectureMismatch (naming `shown`, default `path`) when the weight file `path` does not load
    strictly into extractor `name`'s architecture; `weights install` checks a file so before caching it."""
    spec = get_extractor_spec(name)
    module = spec.build()
    state_dict = load_state_dict_file(path, name)
    try:
        module.load_state_dict(state_dict, strict=True)
    except RuntimeError:
        advice = f"Install a {name} weights file instead; nothing was installed."
        raise WeightsArchitectureMismatch(_mismatch_sentence(spec, module, state_dict, shown or path, advice)) from None


def _mismatch_sentence(
    spec: ExtractorSpec, module: nn.Module, state_dict: dict[str, torch.Tensor], path: Path, advice: str | None = None
) -> str:
    expected = module.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    reshaped = [k for k in expected if k in state_dict and state_dict[k].shape != expected[k].shape]
    differences = [f"{len(missing)} missing", f"{len(unexpected)} unexpected", f"{len(reshaped)} with other shapes"]
    if reshaped:
        key = reshaped[0]
        file_shape, our_shape = list(state_dict[key].shape), list(expected[key].shape)
        differences[-1] += f" (e.g. {key}: file {file_shape}, architecture {our_shape})"
    sentence = (
        f"{path} does not fit the {spec.name!r} architecture: the file holds {_parameters(state_dict)} values in "
        f"{len(state_dict)} tensors, the architecture {_parameters(expected)} in {len(expected)}; keys: "
        f"{', '.join(differences)}."
    )
    history = getattr(spec.weights, "history", None)
    if history:
        sentence += f" {history}"
    return sentence + " " + (advice or f"Point {env_var_for(spec.name)} at a {spec.name} weights file, or unset it.")


def _parameters(state_dict: dict[str, torch.Tensor]) -> str:
    return f"{sum(t.numel() for t in state_dict.values()) / 1e6:.1f}M"
