"""Typed request and response bodies (msgspec structs), and input errors that name each field.

msgspec does the parsing: it imports in about 1 MiB (pydantic took 7, plus 2 for its
model schemas, and the coordinator has 80 MiB to live in). It stops at the first bad
field, so when a parse fails the fields are checked one by one to name every bad one,
as a form would.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Annotated, Any, ClassVar, Literal, TypeVar, get_args, get_origin

import msgspec

from shared.errors import PvesphereError

M = TypeVar("M")

# The largest integer any input may hold (ids, page numbers, filters, sizes): every JSON
# client reads it exactly (JavaScript's numbers too), and it is far inside the 64-bit
# integers of SQLite and MariaDB, so no integer of a request can overflow a query.
INT_MAX = 2**53 - 1
# Characters no text field of this service has a use for: C0 and C1 controls but tab and
# newlines, DEL, and lone surrogates (which cannot even be stored as UTF-8).
_NONSENSE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff]")


class Model(msgspec.Struct):
    """A body the service sends, or accepts from a peer that may know more fields than we do."""


class Input(Model, forbid_unknown_fields=True):
    """A body or query a user sends: an unknown field is an error, not silently dropped."""


class Checked:
    """Mixin for a field type that checks (and may normalise) its own value.

    ``parse`` gets the raw value and returns an instance of the class (msgspec checks that),
    or raises ValueError with a message naming the field.
    """

    json_schema: ClassVar[dict[str, Any]] = {"type": "string"}

    @classmethod
    def parse(cls, raw: Any) -> Any:
        raise NotImplementedError


class CheckedStr(str, Checked):
    """A string field checked by ``check`` (which returns the text to keep)."""

    field: ClassVar[str]

    @classmethod
    def check(cls, text: str) -> str:
        raise NotImplementedError

    @classmethod
    def parse(cls, raw: Any) -> CheckedStr:
        if not isinstance(raw, str):
            raise ValueError(f"{cls.field} must be a string")
        return cls(cls.check(raw))


class InvalidInput(PvesphereError, ValueError):
    """``fields`` maps each bad field ("" for the whole input) to what is wrong with it."""

    def __init__(self, fields: dict[str, str]) -> None:
        self.fields = fields
        super().__init__(
            "; ".join(
                text if text.startswith(loc) else f"{loc} {text}".strip() for loc, text in fields.items()
            )
        )


def dec_hook(tp: Any, value: Any) -> Any:
    if isinstance(tp, type) and issubclass(tp, Checked):
        return tp.parse(value)
    raise NotImplementedError(f"no decoder for {tp!r}")


def schema_hook(tp: Any) -> dict[str, Any]:
    """JSON schema of the Checked types (for msgspec.json.schema_components)."""
    if isinstance(tp, type) and issubclass(tp, Checked):
        return dict(tp.json_schema)
    raise NotImplementedError(f"no schema for {tp!r}")


def parse(model: type[M], data: Any, *, strict: bool = False) -> M:
    """``data`` (JSON values, or strings from a query or form) as a ``model``, or InvalidInput.
    ``strict``: JSON types as they are (a user's JSON body: ``"2"`` is no integer, ``1`` no
    boolean); otherwise text converts ("2", "true": what a query or a form can carry)."""
    try:
        parsed = msgspec.convert(data, model, strict=strict, dec_hook=dec_hook)
    except msgspec.ValidationError as exc:
        raise InvalidInput(_field_errors(model, data, str(exc), strict)) from None
    for name in getattr(model, "__struct_fields__", ()):
        value = getattr(parsed, name)
        if isinstance(value, Checked):
            # Database drivers bind exact types only (sqlite3 refuses a str subclass).
            setattr(parsed, name, _builtin_base(type(value))(value))
    errors = dict(_out_of_bounds(msgspec.to_builtins(parsed)))
    if errors:
        raise InvalidInput(errors)
    return parsed


def _out_of_bounds(value: Any) -> Iterator[tuple[str, str]]:
    """(place, what is wrong) for each integer beyond INT_MAX and each text with control characters.

    The rules every input obeys whatever its type says, so that no field of a current or
    future endpoint can carry a value the databases or the HTTP clients choke on.
    """
    stack: list[tuple[str, Any]] = [("", value)]
    while stack:
        where, item = stack.pop()
        if isinstance(item, bool):
            continue
        if isinstance(item, int) and not -INT_MAX <= item <= INT_MAX:
            yield where, f"must be between {-INT_MAX} and {INT_MAX}" + _got(item)
        elif isinstance(item, str) and (bad := _NONSENSE.search(item)):
            yield where, f"must not contain control characters (found {bad[0]!r} at position {bad.start()})"
        elif isinstance(item, dict):
            for key, child in item.items():
                place = f"{where}.{key}" if where else str(key)
                if isinstance(key, str) and _NONSENSE.search(key):
                    yield where or "", f"has a key with control characters: {key!r}"
                stack.append((place, child))
        elif isinstance(item, list):
            stack.extend((f"{where}[{i}]", child) for i, child in enumerate(item))


def _builtin_base(tp: type) -> type:
    return next(base for base in tp.__mro__ if base.__module__ == "builtins")


def _field_errors(model: type[Any], data: Any, whole: str, strict: bool) -> dict[str, str]:
    if not isinstance(data, dict):
        return {"": "must be a JSON object"}
    errors: dict[str, str] = {}
    fields = msgspec.structs.fields(model)
    known = {f.encode_name for f in fields}
    if model.__struct_config__.forbid_unknown_fields:
        for name in data:
            if name not in known:
                errors[str(name)] = "is not a known parameter"
    for f in fields:
        if f.encode_name not in data:
            if f.required:
                errors[f.encode_name] = "is required"
            continue
        value = data[f.encode_name]
        try:
            msgspec.convert(value, f.type, strict=strict, dec_hook=dec_hook)
        except msgspec.ValidationError as exc:
            where, text = _split_path(str(exc))
            errors[f.encode_name + where] = describe(text, f.type, None if where else value)
    if not errors:  # a check across fields (__post_init__)
        errors[""] = _split_path(whole)[1]
    return errors


def _split_path(message: str) -> tuple[str, str]:
    """'Expected `int` - at `$[0].task_id`' -> ('[0].task_id', 'Expected `int`')."""
    text, sep, path = message.rpartition(" - at `")
    if not sep:
        return "", message
    return path.rstrip("`").removeprefix("$"), text


_NOUNS = {
    "int": "an integer",
    "float": "a number",
    "bool": "true or false",
    "str": "a string",
    "array": "a list",
    "object": "a JSON object",
    "datetime": "an RFC 3339 date-time",
}


def _got(value: Any) -> str:
    """' (got <value>)', cut short: a message must not echo a 5000-character value back."""
    shown = repr(value) if isinstance(value, str) else json.dumps(value, default=str)
    if len(shown) > 60:
        shown = f"{shown[:40]}... ({len(shown)} characters)"
    return f" (got {shown})"


def describe(text: str, tp: Any, value: Any) -> str:
    """msgspec's message for one field, said the way the API says it."""
    # value None: a part of the field's value is wrong, and the path names it
    got = "" if value is None else _got(value)
    if text == "Integer value out of range":
        return f"must be between {-INT_MAX} and {INT_MAX}" + got
    if m := re.fullmatch(r"Expected `([^`]*)`, got `[^`]*`", text):
        expected = m[1].replace(" | null", "")
        return f"must be {_NOUNS.get(expected, expected)}" + got
    if m := re.fullmatch(r"Expected `str` of length (>=|<=) (\d+)", text):
        if m[1] == ">=":
            return f"must be at least {m[2]} character(s)" + got
        return f"must be at most {m[2]} characters"
    if m := re.fullmatch(r"Expected `(?:array|object)` of length (>=|<=) (\d+)", text):
        return f"must have {'at least' if m[1] == '>=' else 'at most'} {m[2]} item(s)"
    if m := re.fullmatch(r"Expected `[^`]*` (>=|<=|>|<) (\S+)", text):
        return f"must be {m[1]} {m[2]}" + got
    if text.startswith("Expected `str` matching regex"):
        return "has an invalid format" + got
    if text.startswith("Invalid enum value"):
        allowed = _literal_values(tp)
        if allowed:
            return "must be one of " + ", ".join(repr(v) for v in allowed) + got
    if text.startswith("Expected `datetime` with a timezone"):
        return "must be a date-time with a timezone" + got
    return text


def _literal_values(tp: Any) -> list[Any]:
    origin = get_origin(tp)
    if origin is Literal:
        return list(get_args(tp))
    if origin is Annotated:
        return _literal_values(get_args(tp)[0])
    return [v for arg in get_args(tp) for v in _literal_values(arg)]
