"""Nothing in the coordinator writes a ``status`` column but coordinator/states (issue 12:
one module per entity owns its statuses and transitions). Read from the source: an
assignment to ``<row>.status``, ``status=`` in an UPDATE's ``.values(...)``, an
``insert(...)``, or a model constructor, outside coordinator/states."""

from __future__ import annotations

import ast
from pathlib import Path

import coordinator
from coordinator.db import models

ROOT = Path(coordinator.__file__).parent
STATES = ROOT / "states"
MODELS = {
    name for name, value in vars(models).items() if isinstance(value, type) and hasattr(value, "__table__")
}


def _row_status(target: ast.expr) -> bool:
    """``<row>.status`` (an object's own ``self.status``, e.g. an HTTP error's, is not a row's)."""
    return (
        isinstance(target, ast.Attribute)
        and target.attr == "status"
        and not (isinstance(target.value, ast.Name) and target.value.id == "self")
    )


def _writes(tree: ast.AST) -> list[int]:
    """Lines of ``tree`` that write a status column."""
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                elements = target.elts if isinstance(target, ast.Tuple) else [target]
                if any(_row_status(e) for e in elements):
                    lines.append(node.lineno)
        elif isinstance(node, ast.Call) and any(k.arg == "status" for k in node.keywords):
            func = node.func
            name = (
                func.attr
                if isinstance(func, ast.Attribute)
                else func.id
                if isinstance(func, ast.Name)
                else ""
            )
            if name in ("values", "insert") or name in MODELS:
                lines.append(node.lineno)
    return lines


def _offenders(root: Path) -> list[str]:
    found = []
    for path in sorted(root.rglob("*.py")):
        if STATES in path.parents or "migrations" in path.parts:
            continue
        found += [f"{path.relative_to(root.parent)}:{line}" for line in _writes(ast.parse(path.read_text()))]
    return found


def test_only_coordinator_states_writes_a_status() -> None:
    assert _offenders(ROOT) == []


def test_the_check_finds_each_kind_of_status_write() -> None:
    source = """
task.status = "failed"
row.status, row.error = "done", None
update(TemplateSyncTask).values(status="pending")
TemplateUpload(status="uploading")
SyncTaskOut(status=task.status)  # an API answer, not a write
self.status = 404  # an error's own attribute
"""
    assert _writes(ast.parse(source)) == [2, 3, 4, 5]
