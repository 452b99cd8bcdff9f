"""YAML files and values read as DVC reads them, with one-line errors.

params.yaml and dvc.yaml are read by YAML 1.2 rules with ruamel.yaml's safe
loader (DVC's ``dvc.utils.serialize.parse_yaml``), so the values DVC
interpolates into a stage's command and the values training validates are
the same; a value typed on the command line (``--set sigma=1e-05``) is read
by the same rules. A syntax error is a :class:`ConfigError` naming the file,
line and column and how to fix it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.error import MarkedYAMLError, YAMLError

from ..errors import ConfigError

# Hints for YAML mistakes, by a word of the parser's complaint.
_YAML_FIXES = {
    "'\\t'": "indent with spaces, not tabs",
    "duplicate key": "keep one of the two keys",
    "mapping values are not allowed": "quote a value that contains ': '",
    "flow sequence": "close the list with ']' and separate its items with ', '",
    "flow mapping": "close the mapping with '}' and separate its items with ', '",
    "quoted scalar": "close the quote",
    "<block mapping start>": "indent the key by as many spaces as the keys beside it",
}

# Unclosed brackets and quotes fail where the parser gives up, often a line
# later: also name where they begin.
_YAML_OPENERS = {"flow sequence": "list", "flow mapping": "mapping", "quoted scalar": "quoted text"}


def yaml() -> YAML:
    # typ="safe" with ruamel's default YAML 1.2 is what DVC uses for
    # params.yaml and dvc.yaml (dvc.utils.serialize.parse_yaml).
    return YAML(typ="safe")


def read_yaml(path: str | Path) -> Any:
    """A YAML file as DVC reads it; a syntax error is one line with file, line and column."""
    path = Path(path)
    try:
        return yaml().load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path} is not UTF-8 text (byte {exc.start}); save it as UTF-8") from None
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        problem = " ".join(str(exc.problem or exc.context or "").split())
        opened = next((what for word, what in _YAML_OPENERS.items() if word in str(exc.context)), None)
        if opened and exc.context_mark and mark is not exc.context_mark:
            problem += f" (in the {opened} begun at line {exc.context_mark.line + 1})"
        fix = next((f for word, f in _YAML_FIXES.items() if word in f"{exc.problem} {exc.context}"), None)
        raise ConfigError(f"{where}: not valid YAML: {problem}; {fix or 'fix the YAML syntax there'}") from None
    except YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {' '.join(str(exc).split())}") from None


def yaml_value(text: str, where: str) -> Any:
    """One value written on a command line (``--set sigma=1e-05``), read by the
    same rules as params.yaml: DVC writes these from params.yaml's values."""
    try:
        return yaml().load(text)
    except YAMLError:
        raise ConfigError(f"{where} = {text!r} is not a valid YAML value; write a number, a word or null") from None
