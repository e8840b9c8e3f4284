"""`pvesphere` settings: a flag beats the environment, which beats the config file; what is
missing is named with the three ways to give it."""

from __future__ import annotations

from pathlib import Path

import pytest

from client.settings import SettingsError, resolve

HOME = {"HOME": "/home/ann"}
DEFAULT_FILE = Path("/home/ann/.config/pvesphere/config.toml")


def files(contents: dict[Path, str]):  # type: ignore[no-untyped-def]
    def read(path: Path) -> str:
        if path not in contents:
            raise FileNotFoundError(path)
        return contents[path]

    return read


FILE = 'url = "https://file:8443"\ntoken = "file-token"\ncacert = "/etc/file-ca.pem"\n'
NONE = {"url": None, "token": None, "cacert": None}


def test_the_file_alone_is_enough() -> None:
    s = resolve(NONE, HOME, read=files({DEFAULT_FILE: FILE}))
    assert (s.url, s.token, s.cacert, s.config_file) == (
        "https://file:8443",
        "file-token",
        Path("/etc/file-ca.pem"),
        DEFAULT_FILE,
    )


def test_the_environment_beats_the_file_and_a_flag_beats_both() -> None:
    env = {**HOME, "PVESPHERE_URL": "https://env:8443", "PVESPHERE_TOKEN": "env-token"}
    s = resolve(NONE, env, read=files({DEFAULT_FILE: FILE}))
    assert (s.url, s.token, s.cacert) == ("https://env:8443", "env-token", Path("/etc/file-ca.pem"))
    flags = {"url": "http://flag:8080", "token": None, "cacert": "/tmp/flag-ca.pem"}
    s = resolve(flags, env, read=files({DEFAULT_FILE: FILE}))
    assert (s.url, s.token, s.cacert) == ("http://flag:8080", "env-token", Path("/tmp/flag-ca.pem"))


def test_the_config_file_is_the_flag_then_the_environment_then_xdg() -> None:
    other, named = Path("/srv/other.toml"), Path("/srv/named.toml")
    contents = {other: 'url = "http://other"\ntoken = "o"\n', named: 'url = "http://named"\ntoken = "n"\n'}
    env = {**HOME, "PVESPHERE_CLIENT_CONFIG": str(other)}
    assert resolve(NONE, env, read=files(contents)).url == "http://other"
    assert resolve(NONE, env, config_flag=named, read=files(contents)).url == "http://named"
    xdg = {"XDG_CONFIG_HOME": "/xdg", "HOME": "/home/ann"}
    s = resolve(NONE, xdg, read=files({Path("/xdg/pvesphere/config.toml"): FILE}))
    assert s.token == "file-token"


def test_a_missing_token_names_the_flag_the_variable_and_the_file() -> None:
    with pytest.raises(SettingsError) as caught:
        resolve({**NONE, "url": "http://c:8080"}, HOME, read=files({}))
    assert str(caught.value) == (
        f'no token: give --token, set $PVESPHERE_TOKEN, or put token = "..." in {DEFAULT_FILE}'
    )
    with pytest.raises(SettingsError, match="no url: give --url, set \\$PVESPHERE_URL.*; no token"):
        resolve(NONE, HOME, read=files({}))


def test_a_config_file_asked_for_by_name_must_exist_and_say_only_what_it_knows() -> None:
    with pytest.raises(SettingsError, match="config file /nope.toml does not exist"):
        resolve(NONE, HOME, config_flag=Path("/nope.toml"), read=files({}))
    bad = {DEFAULT_FILE: 'url = "http://c"\ntoken = "t"\npassword = "x"\n'}
    with pytest.raises(SettingsError, match="unknown setting\\(s\\) password"):
        resolve(NONE, HOME, read=files(bad))
    with pytest.raises(SettingsError, match="not valid TOML"):
        resolve(NONE, HOME, read=files({DEFAULT_FILE: "url = "}))
    with pytest.raises(SettingsError, match="token must be a string"):
        resolve(NONE, HOME, read=files({DEFAULT_FILE: 'url = "http://c"\ntoken = 5\n'}))


def test_the_url_may_name_the_api_prefix_and_must_be_http() -> None:
    flags = {"url": "https://c:8443/api/v1/", "token": "t", "cacert": None}
    assert resolve(flags, HOME, read=files({})).url == "https://c:8443"
    with pytest.raises(SettingsError, match="must start with http:// or https://"):
        resolve({**flags, "url": "c:8443"}, HOME, read=files({}))
