"""Where `pvesphere` writes: results on stdout (lines, or the API's ``data`` as JSON with
``--json``), progress on stdout too unless stdout carries JSON (then on stderr), bars
only on a terminal."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import IO, Any


class Output:
    def __init__(self, as_json: bool, stdout: IO[str] | None = None, stderr: IO[str] | None = None) -> None:
        self.as_json = as_json
        self.stdout = stdout or sys.stdout
        self.stderr = stderr or sys.stderr

    @property
    def progress_stream(self) -> IO[str]:
        return self.stderr if self.as_json else self.stdout

    @property
    def plain(self) -> bool:
        """No bars, no escapes: the progress stream is not a terminal."""
        return not self.progress_stream.isatty()

    def result(self, data: Any, lines: Callable[[Any], list[str]]) -> None:
        """``data`` as JSON, or as the lines ``lines`` makes of it."""
        if self.as_json:
            json.dump(data, self.stdout, indent=2, ensure_ascii=False)
            self.stdout.write("\n")
        else:
            for line in lines(data):
                self.stdout.write(line + "\n")
        self.stdout.flush()

    def note(self, line: str) -> None:
        """A remark for the human (on stderr with --json, where stdout is for the script)."""
        stream = self.progress_stream
        stream.write(line + "\n")
        stream.flush()
