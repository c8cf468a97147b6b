"""Load and validate the gateway's YAML configuration.

``load_config(path)`` returns a typed `Config` or raises `ConfigError` listing every
problem as ``file:line key.path: message``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from gateway.config.checks import Problem, cross_checks
from gateway.config.model import Config, Secret
from gateway.config.secretfiles import config_file_problems
from gateway.config.yamlsource import SourceMap, YamlError, load, loads

__all__ = ["Config", "ConfigError", "ConfigIssue", "Secret", "load_config", "load_config_text"]


@dataclass(frozen=True)
class ConfigIssue:
    file: str
    line: int
    key: str
    message: str
    warning: bool = False

    def __str__(self) -> str:
        key = f" {self.key}:" if self.key else ""
        prefix = "warning: " if self.warning else ""
        return f"{self.file}:{self.line}{key} {prefix}{self.message}"


class ConfigError(ValueError):
    def __init__(self, issues: list[ConfigIssue]) -> None:
        self.issues = issues
        super().__init__("\n".join(str(i) for i in issues))


@dataclass(frozen=True)
class LoadedConfig:
    config: Config
    warnings: list[ConfigIssue]
    path: Path | None


def load_config(path: str | Path) -> LoadedConfig:
    path = Path(path)
    try:
        data, source = load(path)
    except OSError as exc:
        raise ConfigError([ConfigIssue(str(path), 0, "", f"cannot read: {exc.strerror}")]) from None
    except YamlError as exc:
        raise ConfigError([ConfigIssue(exc.file, exc.line, "", str(exc).split(" ", 1)[1])]) from None
    return _validate(data, source, path)


def load_config_text(text: str, name: str = "<config>") -> LoadedConfig:
    try:
        data, source = loads(text, name)
    except YamlError as exc:
        raise ConfigError([ConfigIssue(exc.file, exc.line, "", str(exc).split(" ", 1)[1])]) from None
    return _validate(data, source, None)


def _dotted(loc: tuple[Any, ...]) -> str:
    return ".".join(str(p) for p in loc)


def _validate(data: Any, source: SourceMap, path: Path | None) -> LoadedConfig:
    if not isinstance(data, dict):
        raise ConfigError([ConfigIssue(source.file, 1, "", "the top level must be a mapping")])
    try:
        config = Config.model_validate(data)
    except ValidationError as exc:
        issues = []
        for err in exc.errors(include_url=False, include_input=False):
            raw = err["loc"]
            # Pydantic names the member of a tagged union (auth.psk.x): drop the tag.
            loc = tuple(p for i, p in enumerate(raw)
                        if not (i > 0 and raw[i - 1] == "auth" and p in ("psk", "cert")))
            message = err["msg"].removeprefix("Value error, ")
            if err["type"] == "extra_forbidden":
                message = "unknown key"
            elif err["type"] == "missing":
                message = "required key is missing"
            elif err["type"] == "union_tag_invalid":  # pydantic quotes the value: it may be a secret
                message = f"must be one of {err.get('ctx', {}).get('expected_tags', '?')}"
            issues.append(ConfigIssue(source.file, source.line_of(loc), _dotted(loc), message))
        raise ConfigError(sorted(issues, key=lambda i: i.line)) from None
    problems = cross_checks(config, path.resolve().parent if path is not None else None)
    if path is not None:  # the file itself: who may change it, who may read its secrets
        problems += [Problem(where, message, warning)
                     for where, message, warning in config_file_problems(path, config)]
    errors = [ConfigIssue(source.file, source.line_of(p.path), _dotted(p.path), p.message)
              for p in problems if not p.warning]
    warnings = [ConfigIssue(source.file, source.line_of(p.path), _dotted(p.path), p.message, True)
                for p in problems if p.warning]
    if errors:
        raise ConfigError(errors + warnings)
    return LoadedConfig(config, warnings, path)
