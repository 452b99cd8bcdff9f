"""Layer 3, what decides a run's numbers: the models, the losses, the
training loops, the alignment measures and the Keras backend they run on.

Nothing here imports from report, pipeline, scaleout, api or cli
(tests/test_layers.py checks it). The run fingerprint hashes this code
(training.fingerprint), so a change here that changes numbers retrains."""
