"""The one base of every error that is the user's to fix.

A :class:`UserError` is a wrong key or value, a missing or corrupt file, an
unreachable host: the command line (``cli.main``) prints its message as one
line, ``error: ...``, and exits with status 1 (2 for params.yaml). Anything
else that escapes is a fault of this package and keeps its traceback.
"""


class UserError(Exception):
    """A fault in what the user gave; its message names the cause and the fix."""


class ConfigError(UserError, ValueError):
    """A wrong, missing or unknown setting in params.yaml (or a YAML file
    that cannot be read); the command line exits with status 2."""
