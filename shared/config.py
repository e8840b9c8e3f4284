"""Configuration: a TOML file, then environment variables on top.

Every service describes its settings as a dataclass. A setting named
``database_url`` is read from the file's top-level key ``database_url`` and
overridden by ``<PREFIX>DATABASE_URL`` in the environment, so systemd units
can use ``EnvironmentFile=`` and containers can use plain env vars.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

from shared.errors import PvesphereError
from shared.log import LOG_FORMATS

T = TypeVar("T")


class ConfigError(PvesphereError, ValueError):
    """A setting is missing, unknown or has the wrong type; the message names it."""


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _coerce(name: str, raw: Any, target: Any, source: str) -> Any:
    origin = typing.get_origin(target)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(target) if a is not type(None)]
        if raw is None or raw == "":
            return None
        return _coerce(name, raw, options[0], source)
    if target is bool:
        if isinstance(raw, bool):
            return raw
        text = str(raw).strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
        raise ConfigError(f"{name} ({source}): expected true/false, got {raw!r}")
    if target is int:
        if isinstance(raw, bool):
            raise ConfigError(f"{name} ({source}): expected an integer, got {raw!r}")
        try:
            return int(str(raw).replace("_", ""))
        except ValueError:
            raise ConfigError(f"{name} ({source}): expected an integer, got {raw!r}") from None
    if target is float:
        try:
            return float(raw)
        except (TypeError, ValueError):
            raise ConfigError(f"{name} ({source}): expected a number, got {raw!r}") from None
    if target is Path:
        return Path(os.path.expanduser(str(raw)))
    if target is str:
        if not isinstance(raw, str | int | float):
            raise ConfigError(f"{name} ({source}): expected a string, got {raw!r}")
        return str(raw)
    raise ConfigError(f"{name}: unsupported setting type {target!r}")


def load_config(
    cls: type[T],
    path: Path | None,
    env_prefix: str,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> T:
    """Build ``cls`` from defaults < TOML file < environment < explicit overrides."""
    env = os.environ if env is None else env
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    values: dict[str, Any] = {}

    if path is not None:
        try:
            data = tomllib.loads(Path(path).read_text())
        except FileNotFoundError:
            raise ConfigError(f"config file {path} does not exist") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
        for key, raw in data.items():
            if key not in known:
                raise ConfigError(f"config file {path}: unknown setting {key!r}")
            values[key] = _coerce(key, raw, hints[key], str(path))

    for name in known:
        env_name = env_prefix + name.upper()
        if env_name in env:
            values[name] = _coerce(name, env[env_name], hints[name], f"${env_name}")

    for name, raw in (overrides or {}).items():
        if raw is None:
            continue
        if name not in known:
            raise ConfigError(f"unknown setting {name!r}")
        values[name] = _coerce(name, raw, hints[name], "command line")

    missing = [
        n
        for n, f in known.items()
        if n not in values and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING  # type: ignore[misc]
    ]
    if missing:
        names = ", ".join(f"{m} (or ${env_prefix}{m.upper()})" for m in missing)
        raise ConfigError(f"missing required setting(s): {names}")
    return cls(**values)


def check_log_format(value: str) -> None:
    """``log_format`` names one of shared/log.py's formats."""
    if value not in LOG_FORMATS:
        raise ConfigError(f"log_format must be one of {', '.join(map(repr, LOG_FORMATS))} (got {value!r})")


def read_secret(value: str, file: Path | None, what: str) -> str:
    """A secret comes inline or from a file (systemd credentials, 0600 files)."""
    if file is not None and str(file):
        try:
            secret = Path(file).read_text().strip()
        except OSError as exc:
            raise ConfigError(f"cannot read {what} from {file}: {exc.strerror}") from None
        if not secret:
            raise ConfigError(f"{what} file {file} is empty")
        return secret
    if not value:
        raise ConfigError(f"{what} is not set")
    return value
