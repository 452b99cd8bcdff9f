"""The command line, ``python -m extreme_memorization``: the parser and
the pipeline's commands (main), the commands that train or move runs
elsewhere (elsewhere); TensorFlow's start-up log filter is core/tf_logs.py."""
