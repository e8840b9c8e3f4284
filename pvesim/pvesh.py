"""The `pvesh` shim: PVE's CLI for one node of an emulated cluster.

Each node gets a wrapper script (state dir `nodes/<node>/bin/pvesh`) that runs this module;
with that directory first in PATH, proxmoxer's `local` backend and the agent work unchanged.
It speaks to the emulator's HTTPS API as root@pam of that node (the root secret only the
local root can read) and behaves like pve-manager's PVE/CLI/pvesh.pm:

* `pvesh get|set|create|delete <api_path> [-key value ...] [--output-format json]`;
* a call that starts a worker runs it in the foreground, as PVE does for CLI callers
  (RESTEnvironment fork_worker "sync" mode): the task log goes to stdout while it runs, a
  failed task's error to stderr, and the UPID is printed last as the result;
* an API error goes to stderr as PVE prints it ("400 Parameter verification failed." plus
  one "param: message" line per parameter; plain `die` texts as they are) with exit code 255.

Only the standard library is used so that a call costs little more than Python's start-up.
"""

from __future__ import annotations

import argparse
import json
import ssl
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

METHODS = {"get": "GET", "set": "PUT", "create": "POST", "delete": "DELETE"}
# PVE::RESTHandler standard output options: understood by pvesh, never sent to the API.
OUTPUT_OPTIONS = {"output-format", "quiet", "human-readable", "noborder", "noheader"}
EXIT_DIE = 255  # what a Perl program exits with after an uncaught die
NODE_HEADER = "X-Pvesim-Node"
WORKER_HEADER = "X-Pvesim-Worker"
POLL_SECONDS = 0.25


class CliError(Exception):
    def __init__(self, text: str, code: int = EXIT_DIE) -> None:
        super().__init__(text)
        self.text = text if text.endswith("\n") else text + "\n"
        self.code = code


def parse_options(args: list[str]) -> tuple[dict[str, list[str]], dict[str, str]]:
    """`-key value`, `--key value`, `--key=value`; a flag without a value means 1.

    Returns the API parameters (repeated keys keep every value) and the output options.
    """
    params: dict[str, list[str]] = {}
    output: dict[str, str] = {}
    i = 0
    while i < len(args):
        arg = args[i]
        if not arg.startswith("-") or arg in ("-", "--"):
            raise CliError(f"400 too many arguments\n\nunexpected argument '{arg}'")
        key = arg.lstrip("-")
        if "=" in key:
            key, value = key.split("=", 1)
        elif i + 1 < len(args) and not _looks_like_option(args[i + 1]):
            value = args[i + 1]
            i += 1
        else:
            value = "1"
        if key in OUTPUT_OPTIONS:
            output[key] = value
        elif key != "noproxy":
            params.setdefault(key, []).append(value)
        i += 1
    return params, output


def _looks_like_option(arg: str) -> bool:
    if not arg.startswith("-") or arg == "-":
        return False
    try:
        float(arg)  # a negative number is a value
    except ValueError:
        return True
    return False


class Emulator:
    """The emulator's API, as the local root of one node."""

    def __init__(self, state_dir: Path, node: str) -> None:
        try:
            info = json.loads((state_dir / "api-token.json").read_text())
            self.secret = (state_dir / "root.secret").read_text().strip()
        except OSError as exc:
            raise CliError(
                f"ipcc_send_rec[1] failed: {exc.strerror} (is pvesim running in {state_dir}?)"
            ) from None
        self.base = info["api_url"].rstrip("/") + "/api2/json"
        self.node = node
        self.ssl = ssl.create_default_context(cafile=info["ca_file"])

    def request(self, method: str, path: str, params: dict[str, list[str]]) -> tuple[Any, str | None]:
        """(data, UPID of a started worker or None); raises CliError like pvesh would print it."""
        query = urllib.parse.urlencode([(k, v) for k, vs in params.items() for v in vs])
        url = self.base + urllib.parse.quote(path, safe="/:@!=,-_.~")
        body = None
        if method in ("POST", "PUT"):
            body = query.encode()
        elif query:
            url += "?" + query
        req = urllib.request.Request(url, data=body, method=method)
        req.add_header("Authorization", f"PVESimRoot={self.secret}")
        req.add_header(NODE_HEADER, self.node)
        if body is not None:
            req.add_header("Content-Type", "application/x-www-form-urlencoded")
        try:
            with urllib.request.urlopen(req, context=self.ssl, timeout=None) as resp:
                payload = json.loads(resp.read() or b"{}")
                return payload.get("data"), resp.headers.get(WORKER_HEADER)
        except urllib.error.HTTPError as exc:
            raise _api_error(exc, method, path) from None
        except (urllib.error.URLError, ConnectionError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise CliError(f"ipcc_send_rec[1] failed: {reason}") from None

    def follow_task(self, upid: str) -> None:
        """Print the task log while the worker runs (PVE's tee_worker), then its verdict."""
        node = upid.split(":")[1]
        base = f"/nodes/{node}/tasks/{upid}"
        printed = 0
        while True:
            status, _ = self.request("GET", base + "/status", {})
            lines, _ = self.request("GET", base + "/log", {"start": [str(printed)], "limit": ["1000000"]})
            for entry in lines:
                n, text = int(entry.get("n", 0)), str(entry.get("t", ""))
                if n <= printed or (n == 1 and text == "no content"):
                    continue  # (PVE's placeholder for a log with no lines yet)
                printed = n
                if not text.startswith("TASK ") and not (status["status"] == "stopped" and text == ""):
                    sys.stdout.write(text + "\n")
            sys.stdout.flush()
            if status["status"] == "stopped":
                break
            time.sleep(POLL_SECONDS)
        verdict = str(status.get("exitstatus", ""))
        if verdict.startswith("WARNINGS: "):
            sys.stderr.write(f"Task finished with {verdict[10:]} warning(s)!\n")
        elif verdict != "OK":
            sys.stderr.write(verdict + "\n")


def _api_error(exc: urllib.error.HTTPError, method: str, path: str) -> CliError:
    if exc.code == 501:
        cmd = {v: k for k, v in METHODS.items()}[method]
        return CliError(f"No '{cmd}' handler defined for '{path}'", code=1)
    try:
        body = json.loads(exc.read() or b"{}")
    except ValueError:
        body = {}
    message = str(body.get("message") or exc.reason or "")
    errors = body.get("errors") or {}
    if exc.code == 500 and not errors:
        return CliError(message)  # a plain `die` prints just its text
    text = f"{exc.code} {message}"
    if errors:
        text = text.rstrip("\n") + "\n" + "".join(f"{k}: {v}\n" for k, v in sorted(errors.items()))
    return CliError(text)


def print_result(data: Any, output: dict[str, str]) -> None:
    """PVE::CLIFormatter::print_api_result for the formats scripts use."""
    if data is None or output.get("quiet") not in (None, "0"):
        return
    fmt = output.get("output-format", "text")
    if fmt == "json":
        sys.stdout.write(json.dumps(data, sort_keys=True, separators=(",", ":")) + "\n")
    elif fmt == "json-pretty":
        sys.stdout.write(json.dumps(data, sort_keys=True, indent=3) + "\n")
    elif isinstance(data, str | int | float):
        sys.stdout.write(f"{data}\n")
    else:
        # the text/yaml tables are for people; scripts ask for json
        sys.stdout.write(json.dumps(data, sort_keys=True, indent=3) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pvesh", add_help=False)
    parser.add_argument("--state-dir", required=True, type=Path)
    parser.add_argument("--node", required=True)
    shim, rest = parser.parse_known_args(argv)
    while rest and rest[0] in ("--noproxy", "--nooutput"):
        rest = rest[1:]
    if len(rest) < 2 or rest[0] not in METHODS:
        sys.stderr.write("USAGE: pvesh get|set|create|delete <api_path> [OPTIONS]\n")
        return EXIT_DIE
    cmd, path = rest[0], "/" + rest[1].strip("/")
    try:
        params, output = parse_options(rest[2:])
        api = Emulator(shim.state_dir, shim.node)
        data, worker = api.request(METHODS[cmd], path, params)
        if worker:
            api.follow_task(worker)
        print_result(data, output)
    except CliError as exc:
        sys.stdout.flush()
        sys.stderr.write(exc.text)
        return exc.code
    return 0


if __name__ == "__main__":
    sys.exit(main())
