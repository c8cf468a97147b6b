"""YAML loading that remembers where every key was written.

Errors must name file, line and key (``hq.yaml:14 connections.branch1.remote: ...``),
so the document is composed into nodes first and every mapping key's line is recorded
under its dotted path.  Hex integers keep their original spelling (``HexInt``) because a
key written as ``0x00ff...`` has a length that the integer alone has lost.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

Path_ = tuple[str | int, ...]


class HexInt(int):
    """An integer written in hex in the YAML file, with its original text."""

    text: str

    def __new__(cls, value: int, text: str) -> HexInt:
        obj = super().__new__(cls, value)
        obj.text = text
        return obj


@dataclass
class SourceMap:
    """Line numbers (1-based) of the keys of one YAML document, by path."""

    file: str
    lines: dict[Path_, int] = field(default_factory=dict)

    def line_of(self, path: Path_) -> int:
        """The line of ``path``, or of its nearest ancestor that was written down."""
        p = tuple(path)
        while p:
            if p in self.lines:
                return self.lines[p]
            p = p[:-1]
        return self.lines.get((), 1)


class YamlError(ValueError):
    def __init__(self, file: str, line: int, message: str) -> None:
        super().__init__(f"{file}:{line} {message}")
        self.file = file
        self.line = line


def load(path: Path) -> tuple[Any, SourceMap]:
    """Parse ``path``; returns plain Python data and its source map."""
    text = path.read_text(encoding="utf-8")
    return loads(text, str(path))


#: Keys and list items one document may have once its aliases are expanded: a real
#: configuration has a few hundred; "billion laughs" aliases would have billions.
MAX_VALUES = 100_000


def loads(text: str, name: str = "<config>") -> tuple[Any, SourceMap]:
    """Any text gives data and its source map, or a YamlError (never another exception)."""
    source = SourceMap(name)
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        if node is None:
            return {}, source
        source.lines[()] = node.start_mark.line + 1
        constructor = yaml.SafeLoader("")
        return _build(node, (), source, constructor), source
    except yaml.MarkedYAMLError as exc:  # syntax, and tags no safe constructor knows
        mark = exc.problem_mark
        line = mark.line + 1 if mark else 1
        raise YamlError(name, line, f"YAML syntax: {exc.problem}") from None
    except yaml.reader.ReaderError as exc:  # a character YAML does not allow
        line = text[:exc.position].count("\n") + 1
        raise YamlError(name, line, f"YAML syntax: character #x{exc.character:04x} is not allowed") from None
    except RecursionError:
        raise YamlError(name, 1, "YAML nested too deeply (or an alias that contains itself)") from None


def _construct(node: yaml.Node, source: SourceMap, ctor: yaml.SafeLoader) -> Any:
    """A scalar's value; a tagged scalar its constructor cannot read (``!!int zz``,
    ``!!timestamp x``) is an error at its line, without the value (it may be a secret)."""
    try:
        return ctor.construct_object(node, deep=True)
    except (ValueError, TypeError, AttributeError, OverflowError):
        tag = str(node.tag).rsplit(":", 1)[-1]
        raise YamlError(source.file, node.start_mark.line + 1, f"not a valid {tag} value") from None


def _build(node: yaml.Node, path: Path_, source: SourceMap, ctor: yaml.SafeLoader) -> Any:
    if len(source.lines) > MAX_VALUES:
        raise YamlError(source.file, node.start_mark.line + 1,
                        f"more than {MAX_VALUES} values (aliases expanding without end?)")
    if isinstance(node, yaml.MappingNode):
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = _construct(key_node, source, ctor)
            if isinstance(key, (list, dict)):
                raise YamlError(source.file, key_node.start_mark.line + 1, "a key must be a scalar")
            if key_node.tag == "tag:yaml.org,2002:merge":
                raise YamlError(source.file, key_node.start_mark.line + 1, "merge keys are not supported")
            key_str = str(key)
            child = (*path, key_str)
            if key_str in out:
                raise YamlError(source.file, key_node.start_mark.line + 1,
                                f"{'.'.join(map(str, child))}: duplicate key")
            source.lines[child] = key_node.start_mark.line + 1
            out[key_str] = _build(value_node, child, source, ctor)
        return out
    if isinstance(node, yaml.SequenceNode):
        items = []
        for i, item in enumerate(node.value):
            child = (*path, i)
            source.lines[child] = item.start_mark.line + 1
            items.append(_build(item, child, source, ctor))
        return items
    value = _construct(node, source, ctor)
    if isinstance(value, int) and not isinstance(value, bool):
        raw = str(node.value).replace("_", "")
        if raw.lower().startswith(("0x", "-0x", "+0x")):
            return HexInt(value, raw)
    return value
