"""Measure domain generalization: trained nnU-Net models x named test sets -> Dice table and figure; splits.

The names below are imported on first use (PEP 562), so reading `evaluation.defaults` (the command line
does) does not import nnU-Net's predictor and torch.
"""

from nnunetv2_dropgen.lazy import lazy_exports

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
__getattr__ = lazy_exports(__name__, _EXPORTS)
