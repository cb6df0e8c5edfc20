"""Trainer names that compose: DropGenTrainer[_<extractor>][_p<NNN>][_noDropout|_featuresOnly][_<options>]
[_<schedule>], and the same DropGen parts on any of nnU-Net's own trainers: <nnU-Net trainer>_DropGen[_<extractor>]...

nnU-Net finds a trainer by `hasattr(module, name)` on each module it imports, so the trainer modules
answer any well-formed name with a class built from it (PEP 562 module `__getattr__`). Everything that
shapes the network is in the name, which nnU-Net stores in the results folder, so `nnUNetv2_predict -tr
<name>` rebuilds exactly the trained network. `nnUNetTrainerDA5_DropGen_minimix` is the DropGen mixin on
nnU-Net's nnUNetTrainerDA5 (any trainer class in nnunetv2.training.nnUNetTrainer can be the base:
`nnUNetTrainerNoMirroring_DropGen`, `nnUNetTrainerDiceCELoss_noSmooth_DropGen_p050`, ...); `DropGenTrainer` is
`nnUNetTrainer_DropGen`. The same schedules apply to nnU-Net's own baselines: `nnUNetTrainer_<schedule>` and
`nnUNetTrainerDA5_<schedule>` train them for exactly as long.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import nnunetv2
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from nnunetv2.training.nnUNetTrainer.variants.data_augmentation.nnUNetTrainerDA5 import nnUNetTrainerDA5
from nnunetv2.utilities.find_class_by_name import recursive_find_python_class

from nnunetv2_dropgen.feature_extractors import available_extractors, get_extractor_spec
from nnunetv2_dropgen.network.options import OPTIONS
from nnunetv2_dropgen.trainers.dropgen import DropGen
from nnunetv2_dropgen.trainers.DropGenTrainer import DropGenTrainer
from nnunetv2_dropgen.trainers.schedule import NAMED_SCHEDULES, Schedule, ScheduledTrainer, schedule_from_token

GRAMMAR = "DropGenTrainer[_<extractor>][_p<NNN>][_noDropout|_featuresOnly][_<options>][_<schedule>]"
ON_A_BASE = "<nnU-Net trainer>_DropGen[_<extractor>][_p<NNN>][_noDropout|_featuresOnly][_<options>][_<schedule>]"
MARKER = "_DropGen"
"""What separates an nnU-Net trainer's name from the DropGen parts in names of the second form."""
ABLATIONS = ("noDropout", "featuresOnly")
"""noDropout: nothing dropped. featuresOnly: images always zeroed, no dropout unless a p<NNN> part asks for it."""
_PROBABILITY = re.compile(r"^p(\d{3})$")
BASELINES: dict[str, type[nnUNetTrainer]] = {"nnUNetTrainer": nnUNetTrainer, "nnUNetTrainerDA5": nnUNetTrainerDA5}
"""nnU-Net's own trainers that take a schedule suffix, for comparisons of equal length."""


class TrainerNameError(AttributeError):
    """Not a composable trainer name; an AttributeError so `hasattr` (nnU-Net's search) just says no (the
    module's `__getattr__` prints why for names meant for DropGen)."""


@dataclass(frozen=True)
class DropGenVariant:
    """The settings a DropGen trainer name stands for."""

    extractor_name: str = DropGenTrainer.extractor_name
    dropout_p: float = DropGenTrainer.dropout_p
    use_image: bool = True
    extractor_options: tuple[str, ...] = ()
    schedule: Schedule = Schedule()


def parse_dropgen_name(name: str, shown: str | None = None) -> DropGenVariant:
    """Read a DropGen trainer name; parts must come in the documented order, each at most once.

    shown: the name to put in error messages (the user's, when `name` was rebuilt from one on another base).
    """
    prefix, *tokens = name.split("_")
    shown = shown or name
    if prefix != "DropGenTrainer":
        raise TrainerNameError(f"{shown!r} does not start with 'DropGenTrainer'.")
    extractors = {get_extractor_spec(n).trainer_token: n for n in available_extractors()}
    categories: list[tuple[str, Callable[[str], bool]]] = [
        ("extractor", extractors.__contains__),
        ("p", lambda t: _probability(t) is not None),
        ("ablation", ABLATIONS.__contains__),
        *((option, option.__eq__) for option in OPTIONS),
        ("schedule", lambda t: schedule_from_token(t) is not None),
    ]
    parts: dict[str, str] = {}
    position = 0
    for token in tokens:
        index = next((i for i in range(position, len(categories)) if categories[i][1](token)), None)
        if index is None:
            raise TrainerNameError(_unknown_part(shown, token, extractors))
        parts[categories[index][0]] = token
        position = index + 1
    ablation = parts.get("ablation")
    p = _probability(parts["p"]) if "p" in parts else None
    if ablation == "noDropout" and p is not None:
        raise TrainerNameError(f"{shown!r} asks for dropout {parts['p']} and noDropout at once; keep one.")
    return DropGenVariant(
        extractor_name=extractors[parts["extractor"]] if "extractor" in parts else DropGenTrainer.extractor_name,
        dropout_p=p if p is not None else (0.0 if ablation else DropGenTrainer.dropout_p),
        use_image=ablation != "featuresOnly",
        extractor_options=tuple(option for option in OPTIONS if option in parts),
        schedule=schedule_from_token(parts["schedule"]) if "schedule" in parts else Schedule(),
    )


def _probability(token: str) -> float | None:
    match = _PROBABILITY.match(token)
    if not match or int(match.group(1)) >= 100:
        return None
    return int(match.group(1)) / 100


def _unknown_part(name: str, token: str, extractors: dict[str, str]) -> str:
    schedules = ", ".join([*NAMED_SCHEDULES, "1epoch", "<N>epochs"])
    return (
        f"{name!r} is not a DropGen trainer name: {token!r} is unknown or out of order. Names are {GRAMMAR} "
        f"(or {ON_A_BASE}), "
        f"parts in that order: extractor one of {', '.join(sorted(extractors))}; p<NNN> a dropout probability in "
        f"hundredths (p050 = 0.5); ablation noDropout or featuresOnly; options {', '.join(OPTIONS)} (in that "
        f"order); schedule one of {schedules}."
    )


def nnunet_trainer_class(name: str) -> type[nnUNetTrainer]:
    """One of nnU-Net's own trainer classes (nnunetv2.training.nnUNetTrainer and its variants), by name."""
    folder = Path(nnunetv2.__path__[0]) / "training" / "nnUNetTrainer"
    found = recursive_find_python_class(str(folder), name, "nnunetv2.training.nnUNetTrainer")
    if found is None or not (isinstance(found, type) and issubclass(found, nnUNetTrainer)):
        stem, _, last = name.rpartition("_")
        if stem and schedule_from_token(last) is not None:  # this package's schedule, not an nnU-Net trainer
            raise TrainerNameError(
                f"'{name}{MARKER}...': the schedule goes last, after DropGen's parts: {stem}{MARKER}..._{last} "
                f"(e.g. {stem}{MARKER}_{last})."
            )
        raise TrainerNameError(
            f"{name!r} is not one of nnU-Net's trainers (nnunetv2.training.nnUNetTrainer and its variants), so "
            f"'{name}{MARKER}...' cannot be built; for a trainer of your own, write `class MyDropGen(DropGen, "
            "MyTrainer)` in a folder of nnUNet_extTrainer (README: DropGen on your own trainer)."
        )
    return found


def meant_for_dropgen(name: str) -> bool:
    """Whether a name this package cannot build was still meant for it: a DropGen name, or one of nnU-Net's
    baselines with what looks like a mistyped schedule (`nnUNetTrainerDA5_qiuck`, `nnUNetTrainer_80epoch`).

    Other names (a user's `nnUNetTrainer_MyLoss`) may live in another folder of nnUNet_extTrainer.
    """
    if name.startswith("DropGenTrainer") or MARKER in name:
        return True
    prefix, _, rest = name.partition("_")
    return prefix in BASELINES and (
        re.fullmatch(r"\d*epochs?", rest) is not None
        or bool(difflib.get_close_matches(rest, NAMED_SCHEDULES, cutoff=0.75))
    )


def build_trainer_class(name: str) -> type[nnUNetTrainer]:
    """The trainer class `name` stands for (a DropGen variant, on nnUNetTrainer or another base, or a baseline
    with a schedule)."""
    base_name, marker, dropgen_parts = name.partition(MARKER)
    if marker and base_name and not name.startswith("DropGenTrainer") and dropgen_parts[:1] in ("", "_"):
        variant = parse_dropgen_name(f"DropGenTrainer{dropgen_parts}", shown=name)
        base = nnunet_trainer_class(base_name)
        attributes = {**variant.__dict__, "__doc__": f"{_describe(variant)} On nnU-Net's {base_name}."}
        attributes.update(__module__="nnunetv2_dropgen.trainers", __qualname__=name)
        return type(name, (DropGen, ScheduledTrainer, base), attributes)
    prefix, _, rest = name.partition("_")
    if prefix in BASELINES and rest:
        schedule = schedule_from_token(rest)
        if schedule is None:
            raise TrainerNameError(f"{name!r}: {rest!r} is not a schedule ({', '.join(NAMED_SCHEDULES)}, <N>epochs).")
        attributes: dict = {"schedule": schedule, "__doc__": f"{prefix} with the {rest!r} schedule."}
        bases: tuple[type, ...] = (ScheduledTrainer, BASELINES[prefix])
    else:
        variant = parse_dropgen_name(name)
        attributes = {**variant.__dict__, "__doc__": _describe(variant)}
        bases = (DropGenTrainer,)
    attributes.update(__module__="nnunetv2_dropgen.trainers", __qualname__=name)
    return type(name, bases, attributes)


def _describe(variant: DropGenVariant) -> str:
    images = "image and feature channels" if variant.use_image else "feature channels (images always zeroed)"
    options = f" Options: {', '.join(variant.extractor_options)}." if variant.extractor_options else ""
    return (
        f"DropGen with {variant.extractor_name} features, channel dropout p={variant.dropout_p} on {images}.{options}"
    )
