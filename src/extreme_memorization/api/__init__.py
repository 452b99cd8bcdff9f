"""The public surface (docs/api.md): the alignment measure for any Keras
classifier, as a function and as a callback, and a trained run loaded back."""

from ..core import tf_logs

# TensorFlow's start-up lines that ignore TF_CPP_MIN_LOG_LEVEL (absl's "All
# log messages before absl::InitializeLog()", oneDNN's notice) are held to the
# level the user set, when this import is the one that loads TensorFlow. With
# TF_CPP_MIN_LOG_LEVEL unset every line is kept: nothing changes.
tf_logs.install()

from ..core.probe import MEASURES, AlignmentInputError, measure_alignment  # noqa: E402

__all__ = ["MEASURES", "AlignmentInputError", "measure_alignment"]
