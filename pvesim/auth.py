"""Users, API tokens and the root secret of the pvesh shim.

`access.json` plays the part of PVE's user.cfg + priv/token.cfg. Verification follows
pve-access-control (verify_token) and pve-manager's HTTPServer auth_handler: whatever is
wrong with a token, the client only learns "401 Authentication failed!"; the reason goes to
the server log as "authentication failure: <reason>".
"""

from __future__ import annotations

import hmac
import json
import os
import re
import secrets
import time
import urllib.parse
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

USER_RE = r"[^\s:/]+"
REALM_RE = r"[A-Za-z][A-Za-z0-9.\-_]+"
TOKEN_FULL_RE = re.compile(rf"(({USER_RE})@({REALM_RE}))!({REALM_RE})")
# header the pvesh shim authenticates with (only readable by the local root)
ROOT_AUTH_NAME = "PVESimRoot"
DEFAULT_TOKEN = "root@pam!pvesphere"


class AuthFailure(Exception):
    """Why authentication failed (logged, never shown to the client)."""


@dataclass(frozen=True)
class Principal:
    """Who calls: `userid` is what PVE's get_user() returns (token id for tokens)."""

    userid: str
    user: str
    privsep: bool = False
    cli: bool = False  # the pvesh shim: root@pam in a CLI environment

    @property
    def is_root_pam(self) -> bool:
        return self.userid == "root@pam"

    @property
    def is_superuser(self) -> bool:
        """root@pam, or a root@pam token without privilege separation."""
        return self.user == "root@pam" and not self.privsep


def extract_auth_value(header: str | None, key: str) -> str | None:
    """PVE::APIServer::Formatter::extract_auth_value."""
    if not header:
        return None
    m = re.search(rf"(?:^|\s){re.escape(key)}(?:=| )([^;]*)", header)
    return urllib.parse.unquote(m.group(1)) if m and m.group(1) else None


def _write_private(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.replace(tmp, path)


class AccessStore:
    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / "access.json"
        self.root_secret_path = state_dir / "root.secret"
        self._mtime = 0.0
        self._data: dict[str, Any] = {}

    # -- persistence --------------------------------------------------------------------------

    def initialise(self) -> None:
        if not self.path.exists():
            data = {"users": {"root@pam": {"enable": 1, "expire": 0}}, "tokens": {}}
            _write_private(self.path, json.dumps(data, indent=1))
        if not self.root_secret_path.exists():
            _write_private(self.root_secret_path, secrets.token_hex(32) + "\n")

    def data(self) -> dict[str, Any]:
        # reloaded when changed on disk, so `pvesim token add` works on a running server
        mtime = self.path.stat().st_mtime
        if mtime != self._mtime:
            self._data = json.loads(self.path.read_text())
            self._mtime = mtime
        return self._data

    def save(self, data: dict[str, Any]) -> None:
        _write_private(self.path, json.dumps(data, indent=1))

    def root_secret(self) -> str:
        return self.root_secret_path.read_text().strip()

    def add_token(self, userid: str, tokenname: str, privsep: bool) -> str:
        """pveum user token add: a fresh UUID secret (shown once)."""
        data = dict(self.data())
        users = data.setdefault("users", {})
        if userid not in users:
            if userid.endswith("@pam") or userid.endswith("@pve"):
                users[userid] = {"enable": 1, "expire": 0}
            else:
                raise ValueError(f"user '{userid}' does not exist")
        tokenid = f"{userid}!{tokenname}"
        if not TOKEN_FULL_RE.fullmatch(tokenid):
            raise ValueError(f"'{tokenid}' is not a valid token ID")
        secret = str(uuid.uuid4())
        data.setdefault("tokens", {})[tokenid] = {
            "value": secret,
            "privsep": 1 if privsep else 0,
            "expire": 0,
        }
        self.save(data)
        return secret

    # -- verification -------------------------------------------------------------------------

    def verify_token(self, api_token: str) -> Principal:
        """PVE::AccessControl::verify_token."""
        m = re.fullmatch(r"(.*)=(.*)", api_token, re.S)
        if not m:
            raise AuthFailure("no tokenid specified")
        tokenid, value = m.group(1), m.group(2)
        parts = TOKEN_FULL_RE.fullmatch(tokenid)
        if not parts:
            raise AuthFailure(
                f"'{tokenid}' is not a valid token ID - not able to split into user and token parts"
            )
        user, tokenname = parts.group(1), parts.group(4)
        data = self.data()
        udata = data.get("users", {}).get(user)
        if udata is None:
            raise AuthFailure(f"no such user ('{user}')")
        if not udata.get("enable", 1):
            raise AuthFailure(f"user '{user}' is disabled")
        token = data.get("tokens", {}).get(tokenid)
        if token is None:
            raise AuthFailure(f"no such token '{tokenname}' for user '{user}'")
        if token.get("expire") and token["expire"] < time.time():
            raise AuthFailure(f"token '{tokenname}' access expired")
        if not hmac.compare_digest(str(token.get("value", "")), value):
            raise AuthFailure("invalid token value!")
        return Principal(userid=tokenid, user=user, privsep=bool(token.get("privsep", 1)))

    def verify_root_secret(self, value: str) -> Principal:
        if not hmac.compare_digest(self.root_secret(), value):
            raise AuthFailure("invalid root secret")
        return Principal(userid="root@pam", user="root@pam", cli=True)
