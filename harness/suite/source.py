"""Reading a suite file into plain data, and applying ``KEY=VALUE`` overrides to that data.

YAML goes through PyYAML's ``SafeLoader`` only: tags that build Python objects
(``!!python/object/apply:os.system``) are refused before anything runs. The loader is a
subclass of ``SafeLoader`` that adds one check - duplicate keys in a mapping - because a
second ``sweep:`` block silently replacing the first is a sweep the user did not ask for.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import yaml

from harness.errors import HarnessInputError
from harness.suite.messages import Loc, render_loc, show

_YAML_TAG = "tag:yaml.org,2002:"
_STEP = re.compile(r"([A-Za-z_][A-Za-z0-9_-]*)((?:\[\d+\])*)")


class _SuiteLoader(yaml.SafeLoader):
    """``SafeLoader`` that refuses a key given twice in one mapping."""

    def construct_mapping(self, node: yaml.Node, deep: bool = False) -> dict[Any, Any]:
        if isinstance(node, yaml.MappingNode):
            seen: dict[str, yaml.Mark] = {}
            for key_node, _ in node.value:
                if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == _YAML_TAG + "merge":
                    continue
                if key_node.value in seen:
                    first = seen[key_node.value].line + 1
                    raise yaml.constructor.ConstructorError(
                        None, None, f"key {key_node.value!r} is given twice (first on line "
                        f"{first}); keep one", key_node.start_mark,
                    )
                seen[key_node.value] = key_node.start_mark
        return super().construct_mapping(node, deep=deep)


def parse_yaml(text: str, where: str) -> Any:
    """Plain data from YAML text; any YAML problem becomes one line naming line and column."""
    try:
        return yaml.load(text, Loader=_SuiteLoader)  # a SafeLoader subclass: safe
    except yaml.MarkedYAMLError as exc:
        raise HarnessInputError(f"{where}: {_describe(exc)}") from None
    except yaml.YAMLError as exc:  # unmarked errors (rare: e.g. a stream-level reader error)
        raise HarnessInputError(f"{where}: invalid YAML: {exc}") from None


def _describe(exc: yaml.MarkedYAMLError) -> str:
    mark = exc.problem_mark or exc.context_mark
    place = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    problem = str(exc.problem or "invalid YAML")
    tag = re.search(r"constructor for the tag '([^']*)'", problem)
    if tag:
        name = tag.group(1).replace(_YAML_TAG, "!!")
        return (
            f"{place}tag {name!r} is not allowed (a suite is plain data: mappings, lists, "
            "strings, numbers and booleans)"
        )
    if problem.startswith("key ") and "given twice" in problem:
        return f"{place}{problem}"
    context = f" {exc.context}" if exc.context else ""
    start = exc.context_mark
    if context and start is not None and mark is not None and start.line != mark.line:
        context += f" that starts on line {start.line + 1}"
    return f"{place}invalid YAML: {problem}{context}"


def read_suite_file(path: str | Path) -> Any:
    """The file's YAML as plain data; a missing, unreadable or empty file is one clear line."""
    where = str(path)
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise HarnessInputError(f"{where}: no such file{_sibling_hint(file)}") from None
    except IsADirectoryError:
        raise HarnessInputError(f"{where}: is a directory, not a suite file") from None
    except UnicodeDecodeError:
        raise HarnessInputError(f"{where}: is not UTF-8 text (a suite is a YAML file)") from None
    except OSError as exc:
        raise HarnessInputError(f"{where}: cannot read the file ({exc.strerror})") from None
    data = parse_yaml(text, where)
    if data is None:
        raise HarnessInputError(
            f"{where}: the file is empty (a suite needs at least 'layers' and 'sweep')"
        )
    return data


def _sibling_hint(file: Path) -> str:
    import difflib

    folder = file.parent
    if not folder.is_dir():
        return f" (no folder {str(folder)!r} either)"
    names = sorted(p.name for p in folder.iterdir() if p.suffix in (".yaml", ".yml"))
    close = difflib.get_close_matches(file.name, names, n=1, cutoff=0.6)
    if close:
        return f" (did you mean {str(folder / close[0])!r}?)"
    return f" (suites there: {', '.join(names)})" if names else ""


def parse_path(key: str) -> Loc | None:
    """``sweep.seq_len`` -> ('sweep', 'seq_len'); ``layers[0].variants`` -> ('layers', 0, ...)."""
    steps: list[str | int] = []
    for part in key.split("."):
        match = _STEP.fullmatch(part)
        if match is None:
            return None
        steps.append(match.group(1))
        steps.extend(int(i) for i in re.findall(r"\[(\d+)\]", match.group(2)))
    return tuple(steps)


def apply_overrides(
    data: Any, overrides: tuple[str, ...] | list[str]
) -> tuple[Any, dict[Loc, str]]:
    """A copy of ``data`` with each ``KEY=VALUE`` set (VALUE parsed as YAML) and, per key path
    set, the override text (so a later error can say which override caused it)."""
    if not overrides:
        return data, {}
    data = copy.deepcopy(data)
    notes: dict[Loc, str] = {}
    for text in overrides:
        if not isinstance(text, str) or "=" not in text:
            raise HarnessInputError(
                f"override {text!r}: expected KEY=VALUE, e.g. sweep.seq_len=[128,256] or batch=2"
            )
        key, _, value_text = text.partition("=")
        path = parse_path(key.strip())
        if path is None:
            raise HarnessInputError(
                f"override {text!r}: {key.strip()!r} is not a key path "
                "(names joined by '.', list items as [i], e.g. layers[0].variants)"
            )
        value = parse_yaml(value_text, f"override {text!r}")
        _set(data, path, value, text)
        notes[path] = text
    return data, notes


def _set(data: Any, path: Loc, value: Any, text: str) -> None:
    node = data
    for depth, step in enumerate(path[:-1]):
        child = _child(node, step, path[: depth + 1], text)
        if child is None:
            child = {}
            node[step] = child
        elif isinstance(child, str) and path[:depth] == ("layers",):
            child = {"name": child}  # a bare layer name gains settings: {name: lstm, ...}
            node[step] = child
        elif not isinstance(child, dict | list):
            where = render_loc(path[: depth + 1])
            raise HarnessInputError(
                f"override {text!r}: {where} is {show(child)}, not a mapping or a list"
            )
        node = child
    _child(node, path[-1], path, text)  # validates the last step (index in range)
    node[path[-1]] = value


def _child(node: Any, step: str | int, where: Loc, text: str) -> Any:
    if isinstance(step, int):
        if not isinstance(node, list):
            raise HarnessInputError(f"override {text!r}: {render_loc(where[:-1])} is not a list")
        if step >= len(node):
            raise HarnessInputError(
                f"override {text!r}: {render_loc(where)} is out of range "
                f"({render_loc(where[:-1])} has {len(node)} items)"
            )
        return node[step]
    if not isinstance(node, dict):
        raise HarnessInputError(f"override {text!r}: {render_loc(where[:-1])} is not a mapping")
    return node.get(step)
