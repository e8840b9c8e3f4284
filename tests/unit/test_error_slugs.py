"""Error slugs are one enum (shared/error_slugs.py): the code builds and compares errors with
its members, never with free strings that one side could rename without the other.

mypy already refuses a str where an ErrorSlug is expected (every error constructor takes
one); this also catches what mypy lets through: comparisons of ``.error`` or
``.error_kind`` with a string, and a slug's text written out anywhere in the product."""

from __future__ import annotations

import ast
from pathlib import Path

from shared.error_slugs import ErrorSlug, ImportErrorKind

ROOT = Path(__file__).resolve().parents[2]
PRODUCT = ("coordinator", "agent", "shared")
SLUG_ATTRIBUTES = {"error", "error_kind"}
ERROR_CALLS = {
    "ApiError",
    "ServiceError",
    "AgentError",
    "TransferRefused",
    "json_error",
    "error_response",
    "conflict",
    "bad_request",
    "not_found",
    "ImportFailed",
    "CloneFailed",
    "OpFailed",
    "UploadLimitReached",
}


def _sources() -> list[Path]:
    return [
        path
        for part in PRODUCT
        for path in sorted((ROOT / part).rglob("*.py"))
        if path.name != "error_slugs.py" and "migrations" not in path.parts
    ]


def _free_slugs(path: Path, root: Path = ROOT) -> list[str]:
    """'file:line: what' for each string literal used as a slug in ``path``, in line order."""
    found: list[tuple[int, int, str]] = []
    for node in ast.walk(ast.parse(path.read_text())):
        texts: list[ast.expr] = []
        if isinstance(node, ast.Call):
            name = node.func.id if isinstance(node.func, ast.Name) else getattr(node.func, "attr", "")
            if name in ERROR_CALLS:
                texts = [*node.args[1:2], *(k.value for k in node.keywords if k.arg in SLUG_ATTRIBUTES)]
                if name == "not_found":
                    texts = node.args[:1]
        elif isinstance(node, ast.Compare):
            sides = [node.left, *node.comparators]
            if any(isinstance(s, ast.Attribute) and s.attr in SLUG_ATTRIBUTES for s in sides):
                texts = sides
                texts += [e for s in sides if isinstance(s, ast.Set | ast.Tuple | ast.List) for e in s.elts]
        for text in texts:
            if isinstance(text, ast.Constant) and isinstance(text.value, str):
                found.append(
                    (text.lineno, text.col_offset, f"{path.relative_to(root)}:{text.lineno}: {text.value!r}")
                )
    return [hit for _, _, hit in sorted(found)]


def test_no_slug_is_a_free_string() -> None:
    assert [hit for path in _sources() for hit in _free_slugs(path)] == []


def test_the_check_finds_a_free_slug(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text(
        'raise ApiError(409, "busy", "m")\n'
        'if exc.error == "vm_busy": pass\n'
        'if op.error_kind in ("timeout", "canceled"): pass\n'
        'raise not_found("template_not_found", 1)\n'
    )
    hits = [hit.split(": ", 1)[1] for hit in _free_slugs(sample, tmp_path)]
    assert hits == ["'busy'", "'vm_busy'", "'timeout'", "'canceled'", "'template_not_found'"]


def test_every_slug_is_one_snake_case_word_and_none_is_listed_twice() -> None:
    for enum in (ErrorSlug, ImportErrorKind):
        values = [member.value for member in enum]
        assert len(values) == len(set(values))
        assert all(v.replace("_", "").isalpha() and v == v.lower() for v in values), values
