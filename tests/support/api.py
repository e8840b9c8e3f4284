"""A small HTTP client for the coordinator's API, as a user's script would call it."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests


@dataclass
class Reply:
    status: int
    body: Any
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def data(self) -> Any:
        assert isinstance(self.body, dict), self.body
        return self.body["data"]

    @property
    def error(self) -> str:
        return str(self.data["error"])

    @property
    def message(self) -> str:
        return str(self.body["message"])

    def ok(self) -> Any:
        assert self.status == 200, f"expected 200, got {self.status}: {self.body}"
        assert self.body["code"] == 200 and self.body["message"] == "success", self.body
        return self.data


class Api:
    """``ca_file``: what an https base URL's certificate is checked against."""

    def __init__(self, base: str, token: str | None, ca_file: Path | None = None) -> None:
        self.base = base.rstrip("/")
        self.token = token
        self.ca_file = ca_file
        self.http = requests.Session()

    def as_token(self, token: str | None) -> Api:
        return Api(self.base, token, self.ca_file)

    def request(self, method: str, path: str, **kw: Any) -> Reply:
        headers = dict(kw.pop("headers", {}) or {})
        if self.token is not None:
            headers.setdefault("Authorization", f"Bearer {self.token}")
        kw.setdefault("timeout", 60)
        if self.ca_file is not None:  # per request: $REQUESTS_CA_BUNDLE would win over the session's
            kw.setdefault("verify", str(self.ca_file))
        resp = self.http.request(method, self.base + path, headers=headers, **kw)
        try:
            body = resp.json()
        except ValueError:
            body = resp.text
        return Reply(resp.status_code, body, dict(resp.headers))

    def get(self, path: str, **kw: Any) -> Reply:
        return self.request("GET", path, **kw)

    def post(self, path: str, **kw: Any) -> Reply:
        return self.request("POST", path, **kw)

    def put(self, path: str, **kw: Any) -> Reply:
        return self.request("PUT", path, **kw)

    def delete(self, path: str, **kw: Any) -> Reply:
        return self.request("DELETE", path, **kw)

    def all(self, path: str, **params: Any) -> list[Any]:
        """Every item of a paginated list."""
        items: list[Any] = []
        page = 1
        while True:
            data = self.get(path, params={**params, "page": page, "page_size": 100}).ok()
            items.extend(data["list"])
            if len(items) >= data["total"] or not data["list"]:
                return items
            page += 1
