"""The error of `nnunetv2_dropgen evaluate`: its message is a sentence that says what is wrong and what to do."""

from __future__ import annotations


class EvaluationError(ValueError):
    """Bad input to an evaluation (a model, a test set, an option); raised before anything is written."""
