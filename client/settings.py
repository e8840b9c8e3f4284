"""Where `pvesphere` finds the coordinator and its token: flags, then the environment, then
a TOML file (pure: the caller hands in the flags, the environment and the file's text).

A flag beats ``PVESPHERE_<NAME>``, which beats the file's ``<name> = ...``. The file is
``--config``, else ``$PVESPHERE_CLIENT_CONFIG`` (not ``$PVESPHERE_CONFIG``: that one is the
coordinator's, and on its host it names coordinator.toml), else ``$XDG_CONFIG_HOME/pvesphere/config.toml``
(``~/.config/...``); only a file asked for by name must exist.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from client.exit_codes import UsageError

KEYS = ("url", "token", "cacert")
ENV = {key: f"PVESPHERE_{key.upper()}" for key in KEYS}
CONFIG_ENV = "PVESPHERE_CLIENT_CONFIG"


class SettingsError(UsageError):
    """A setting is missing or unreadable; the message says how to give it."""


@dataclass(frozen=True)
class Settings:
    url: str  # the coordinator's base URL, without /api/v1
    token: str
    cacert: Path | None  # the CA an https URL's certificate is checked against (None: the system's)
    config_file: Path


def default_config_file(env: Mapping[str, str]) -> Path:
    base = env.get("XDG_CONFIG_HOME") or os.path.join(env.get("HOME") or os.path.expanduser("~"), ".config")
    return Path(base) / "pvesphere" / "config.toml"


def config_file(flag: Path | None, env: Mapping[str, str]) -> tuple[Path, bool]:
    """The file to read and whether it was asked for by name (then it must exist)."""
    if flag is not None:
        return flag, True
    if env.get(CONFIG_ENV):
        return Path(env[CONFIG_ENV]), True
    return default_config_file(env), False


def read_config(path: Path, required: bool, read: Callable[[Path], str]) -> dict[str, str]:
    try:
        text = read(path)
    except FileNotFoundError:
        if required:
            raise SettingsError(f"config file {path} does not exist") from None
        return {}
    except OSError as exc:
        raise SettingsError(f"cannot read config file {path}: {exc.strerror}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(f"config file {path} is not valid TOML: {exc}") from None
    unknown = sorted(set(data) - set(KEYS))
    if unknown:
        raise SettingsError(
            f"config file {path}: unknown setting(s) {', '.join(unknown)} (known: {', '.join(KEYS)})"
        )
    wrong = [k for k, v in data.items() if not isinstance(v, str)]
    if wrong:
        raise SettingsError(f"config file {path}: {', '.join(wrong)} must be a string")
    return {k: str(v) for k, v in data.items()}


def resolve(
    flags: Mapping[str, str | None],
    env: Mapping[str, str],
    config_flag: Path | None = None,
    read: Callable[[Path], str] = lambda p: p.read_text(),
) -> Settings:
    """The settings, each from the first of: its flag, its environment variable, the file."""
    path, required = config_file(config_flag, env)
    from_file = read_config(path, required, read)
    chosen: dict[str, str] = {}
    for key in KEYS:
        for value in (flags.get(key), env.get(ENV[key]), from_file.get(key)):
            if value:
                chosen[key] = value.strip()
                break
    missing = [key for key in ("url", "token") if key not in chosen]
    if missing:
        raise SettingsError(
            "; ".join(
                f'no {key}: give --{key}, set ${ENV[key]}, or put {key} = "..." in {path}' for key in missing
            )
        )
    url = chosen["url"].rstrip("/").removesuffix("/api/v1")
    if not url.startswith(("http://", "https://")):
        raise SettingsError(f"url must start with http:// or https:// (got {chosen['url']!r})")
    cacert = Path(chosen["cacert"]).expanduser() if chosen.get("cacert") else None
    return Settings(url=url, token=chosen["token"], cacert=cacert, config_file=path)
