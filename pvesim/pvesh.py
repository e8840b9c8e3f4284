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

A call should cost little more than the interpreter's start: the test suite makes
thousands. So the wrapper runs this file with the standard library only (`python -S`, no
site-packages), and it speaks plain HTTP/1.0 over the running emulator's Unix socket
(``pvesh.sock`` in its state directory) rather than HTTPS through urllib: the ssl, urllib and
http.client imports (http.client alone pulls in the email parser) and a TLS handshake were
most of a call's CPU.
"""

from __future__ import annotations

import errno
import json
import os
import socket
import sys
import time
import urllib.parse
from typing import Any

METHODS = {"get": "GET", "set": "PUT", "create": "POST", "delete": "DELETE"}
# PVE::RESTHandler standard output options: understood by pvesh, never sent to the API.
OUTPUT_OPTIONS = {"output-format", "quiet", "human-readable", "noborder", "noheader"}
EXIT_DIE = 255  # what a Perl program exits with after an uncaught die
NODE_HEADER = "X-Pvesim-Node"
WORKER_HEADER = "X-Pvesim-Worker"
POLL_SECONDS = 0.25
# The emulator's socket for the shim, in its state directory (pvesim/cli.py serves it).
SOCKET_FILE = "pvesh.sock"


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


def _exchange(state_dir: str, request: bytes) -> tuple[int, str, dict[str, str], bytes]:
    """One HTTP/1.0 exchange on the emulator's socket: (status, reason, headers, body). The
    server closes the connection after an HTTP/1.0 answer, so the body is all that follows."""
    # Through the directory's /proc/self/fd entry: the path of a state directory may be
    # longer than the 108 bytes a socket address holds.
    dirfd = os.open(state_dir, os.O_RDONLY | os.O_DIRECTORY)
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.connect(f"/proc/self/fd/{dirfd}/{SOCKET_FILE}")
            sock.sendall(request)
            chunks = []
            while data := sock.recv(1 << 16):
                chunks.append(data)
    finally:
        os.close(dirfd)
    if not chunks:
        # The emulator breaks the connection of a node it holds offline (pvesim/server.py).
        raise ConnectionRefusedError(errno.ECONNREFUSED, os.strerror(errno.ECONNREFUSED))
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    _version, status, reason = (lines[0].split(" ", 2) + [""])[:3]
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(status), reason, headers, body


class Emulator:
    """The emulator's API, as the local root of one node."""

    def __init__(self, state_dir: str, node: str) -> None:
        try:
            with open(f"{state_dir}/root.secret") as f:
                self.secret = f.read().strip()
        except OSError as exc:
            raise CliError(
                f"ipcc_send_rec[1] failed: {exc.strerror} (is pvesim running in {state_dir}?)"
            ) from None
        self.state_dir = state_dir
        self.node = node

    def request(self, method: str, path: str, params: dict[str, list[str]]) -> tuple[Any, str | None]:
        """(data, UPID of a started worker or None); raises CliError like pvesh would print it."""
        query = urllib.parse.urlencode([(k, v) for k, vs in params.items() for v in vs])
        url = "/api2/json" + urllib.parse.quote(path, safe="/:@!=,-_.~")
        headers = {"Authorization": f"PVESimRoot={self.secret}", NODE_HEADER: self.node}
        body = b""
        if method in ("POST", "PUT"):
            body = query.encode()
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        elif query:
            url += "?" + query
        headers["Content-Length"] = str(len(body))
        head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        try:
            status, reason, answer_headers, raw = _exchange(
                self.state_dir, f"{method} {url} HTTP/1.0\r\n{head}\r\n".encode() + body
            )
        except (OSError, ValueError) as exc:
            raise _unreachable(exc) from None
        if status >= 400:
            raise _api_error(status, reason, raw, method, path)
        payload = json.loads(raw or b"{}")
        return payload.get("data"), answer_headers.get(WORKER_HEADER.lower())

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


def _unreachable(exc: OSError | ValueError) -> CliError:
    """What pvesh prints when the node's cluster filesystem (pmxcfs) does not answer: its
    IPC tries, then the access control list it could not load. The node down, the emulator
    away: PVE's words, never Python's (the agent reads them as "PVE did not answer",
    shared/pve_outage.py)."""
    why = (exc.strerror if isinstance(exc, OSError) else None) or os.strerror(errno.ECONNREFUSED)
    tries = "".join(f"ipcc_send_rec[{n}] failed: {why}\n" for n in (1, 2, 3))
    return CliError(f"{tries}Unable to load access control list: {why}")


def _api_error(status: int, reason: str, raw: bytes, method: str, path: str) -> CliError:
    if status == 501:
        cmd = {v: k for k, v in METHODS.items()}[method]
        return CliError(f"No '{cmd}' handler defined for '{path}'", code=1)
    try:
        body = json.loads(raw or b"{}")
    except ValueError:
        body = {}
    message = str(body.get("message") or reason or "")
    errors = body.get("errors") or {}
    if status == 500 and not errors:
        return CliError(message)  # a plain `die` prints just its text
    text = f"{status} {message}"
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
    args = sys.argv[1:] if argv is None else argv
    # The wrapper always starts with these two (no argparse: it costs a tenth of a call).
    if len(args) < 4 or args[0] != "--state-dir" or args[2] != "--node":
        sys.stderr.write("pvesh shim: start it through its wrapper (nodes/<node>/bin/pvesh)\n")
        return EXIT_DIE
    state_dir, node, rest = args[1], args[3], args[4:]
    while rest and rest[0] in ("--noproxy", "--nooutput"):
        rest = rest[1:]
    if len(rest) < 2 or rest[0] not in METHODS:
        sys.stderr.write("USAGE: pvesh get|set|create|delete <api_path> [OPTIONS]\n")
        return EXIT_DIE
    cmd, path = rest[0], "/" + rest[1].strip("/")
    try:
        params, output = parse_options(rest[2:])
        api = Emulator(state_dir, node)
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
