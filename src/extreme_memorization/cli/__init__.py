"""The command line, ``python -m extreme_memorization``: the parser and
the pipeline's commands (main, stages, results, keys), moving runs between
machines (remotes), training side by side or on Slurm and the dry run
(scaleout); TensorFlow's start-up log filter is core/tf_logs.py."""
