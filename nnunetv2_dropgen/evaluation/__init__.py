"""Measure domain generalization: trained nnU-Net models x named test sets -> Dice table and figure; splits."""

from nnunetv2_dropgen.evaluation.errors import EvaluationError
from nnunetv2_dropgen.evaluation.evaluate import EvaluationRequest, EvaluationResult, run_evaluation
from nnunetv2_dropgen.evaluation.models import ModelSpec, TrainedModel
from nnunetv2_dropgen.evaluation.predict import PredictionSettings
from nnunetv2_dropgen.evaluation.report import EvaluationTable
from nnunetv2_dropgen.evaluation.test_sets import TestSet

__all__ = [
    "EvaluationError",
    "EvaluationRequest",
    "EvaluationResult",
    "EvaluationTable",
    "ModelSpec",
    "PredictionSettings",
    "TestSet",
    "TrainedModel",
    "run_evaluation",
]
