"""The command line, ``python -m extreme_memorization``: the parser and
the pipeline's commands (main), the commands that train or move runs
elsewhere (elsewhere), and TensorFlow's start-up log filter (tf_logs)."""
