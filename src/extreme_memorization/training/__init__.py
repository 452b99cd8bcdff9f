"""Layer 4, a pack of runs trained: the run driver (train), its
checkpoints, the run store, progress and signals, the run folder (run_folder)
and the fingerprint that keys a run by what decides its numbers."""
