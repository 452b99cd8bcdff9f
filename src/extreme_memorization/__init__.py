"""Reproduction of "Extreme Memorization via Scale of Initialization"
(Mehta, Cutkosky, Neyshabur, ICLR 2021) in Keras 3."""

__version__ = "0.1.0"

import os as _os

# TensorFlow's C++ start-up chatter (oneDNN notices, CUDA probing on CPU hosts).
_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
