"""Measure domain generalization: trained nnU-Net models x named test sets -> Dice table and figure; splits.

The names below are imported on first use (PEP 562), so reading `evaluation.defaults` (the command line
does) does not import nnU-Net's predictor and torch.
"""

from importlib import import_module
from typing import Any

_EXPORTS = {
    "EvaluationError": "errors",
    "EvaluationRequest": "evaluate",
    "EvaluationResult": "evaluate",
    "run_evaluation": "evaluate",
    "ModelSpec": "models",
    "TrainedModel": "models",
    "PredictionSettings": "predict",
    "EvaluationTable": "report",
    "TestSet": "test_sets",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f"{__name__}.{_EXPORTS[name]}"), name)
