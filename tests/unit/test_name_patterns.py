"""Names and ids from outside are checked whole: a trailing newline is not part of a valid name.

(``$`` matches before a final newline; fullmatch and ``\\Z`` do not.)
"""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Any

import pytest

from agent.staging import BadStagedName, Staging
from shared.messages.imports import ImportRequest
from shared.messages.transfers import TransferRequest
from shared.validation import InvalidInput, parse
from shared.vm_config import VmConfig

ROOT = Path(__file__).resolve().parents[2]


def test_a_staged_name_with_a_newline_is_not_a_staged_name(tmp_path: Path) -> None:
    staging = Staging(tmp_path)
    assert staging.path("upload-7-0123abcd.raw") == tmp_path / "upload-7-0123abcd.raw"
    with pytest.raises(BadStagedName):
        staging.path("upload-7-0123abcd.raw\n")


STAGED = "upload-2-0123abcd.raw"
IMPORT = {"key": "t1-u2", "vmid": 9000, "staged_name": STAGED, "storage": "local", "name": "x"}
TRANSFER = {"transfer_id": "t5e1", "staged_name": STAGED, "size": 1, "hops": []}


@pytest.mark.parametrize(
    ("model", "good", "field"),
    [
        (ImportRequest, IMPORT, "key"),
        (ImportRequest, IMPORT, "storage"),
        (TransferRequest, TRANSFER, "transfer_id"),
    ],
)
def test_agent_request_fields_with_a_trailing_newline_are_refused(model: Any, good: Any, field: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        parse(model, {**good, field: good[field] + "\n"})
    assert field in str(refused.value)


def test_a_vm_option_name_with_a_trailing_newline_is_refused() -> None:
    with pytest.raises(ValueError):
        VmConfig.parse({"memory\n": 1024})


def _patterns(tree: ast.AST) -> list[tuple[int, str]]:
    """String literals used as regexes: re.compile/match/search(...) and pattern=... arguments."""
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        if (
            isinstance(func, ast.Attribute)
            and func.attr in ("compile", "match", "search")
            and isinstance(func.value, ast.Name)
            and func.value.id == "re"
            and node.args
            and isinstance(node.args[0], ast.Constant)
        ):
            found.append((node.lineno, str(node.args[0].value)))
        for kw in node.keywords:
            if kw.arg == "pattern" and isinstance(kw.value, ast.Constant):
                found.append((node.lineno, str(kw.value.value)))
    return found


def test_no_pattern_in_the_product_ends_in_a_dollar() -> None:
    loose = []
    for part in ("agent", "coordinator", "shared"):
        for path in sorted((ROOT / part).rglob("*.py")):
            for line, pattern in _patterns(ast.parse(path.read_text())):
                if re.search(r"(?<!\\)\$$", pattern):
                    loose.append(f"{path.relative_to(ROOT)}:{line}: {pattern!r}")
    assert loose == [], "anchor these with fullmatch or \\Z:\n" + "\n".join(loose)
