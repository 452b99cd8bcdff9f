"""The public surface (docs/api.md): the alignment measure for any Keras
classifier, as a function and as a callback, and a trained run loaded back."""

from ..core.probe import MEASURES, AlignmentInputError, measure_alignment

__all__ = ["MEASURES", "AlignmentInputError", "measure_alignment"]
