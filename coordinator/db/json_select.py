"""SQL that makes SQLite write an API answer's JSON (json_object, json_group_array).

On SQLite, the database runs in the coordinator's process: a page of 10 sync tasks read as
rows cost 0.126 ms of CPU in the handler (190 values made Python objects, 30 times parsed,
structs built, encoded by msgspec; 100k tasks, the least of 10 runs), written by SQLite as
one string 0.104 ms, spliced into the envelope as it comes (coordinator/api/fast_json.py).
Not on MariaDB: its JSON_OBJECT costs the server about 20 us a row (a page of 10 tasks:
mariadbd 0.35 ms of CPU instead of 0.15 as rows; with JSON_ARRAYAGG over the page's
derived table 0.7-1.5 ms), more than the coordinator saves on the same two cores
(``writes_json``).

The JSON is the document msgspec writes for the API's struct (tests/inprocess/
test_read_json.py diffs it against the ORM's answer): keys in the struct's order
(``object_of`` refuses a mapping that is not the struct's fields), a UtcDateTime as
``YYYY-MM-DDTHH:MM:SSZ`` (``utc_text``), NULL as null.
"""

from __future__ import annotations

import re
from typing import Any

import msgspec
from sqlalchemy import func, literal_column
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.sql.functions import FunctionElement
from sqlalchemy.types import String

from coordinator.db.fast_reads import fields_of

_KEY = re.compile(r"[a-z_][a-z0-9_]*\Z")


def writes_json(dialect: Dialect) -> bool:
    """Whether the database writes the hot reads' JSON (SQLite), or sends rows (MariaDB)."""
    return dialect.name == "sqlite"


class utc_text(FunctionElement[str]):  # noqa: N801 (SQL functions are lower case, as func.*)
    """A UtcDateTime column as the API writes it: whole seconds, "T", "Z" (NULL stays NULL).

    SQLite keeps it as "YYYY-MM-DD HH:MM:SS.ffffff"; the API drops the fraction
    (coordinator/api/timefmt.py)."""

    type = String()
    inherit_cache = True


# Also the default: str() of a statement (and get_final_froms) compiles without a dialect.
@compiles(utc_text)
@compiles(utc_text, "sqlite")
def _utc_text(element: utc_text, compiler: SQLCompiler, **kw: Any) -> str:
    return f"replace(substr({compiler.process(element.clauses, **kw)}, 1, 19), ' ', 'T') || 'Z'"


class json_list(FunctionElement[str]):  # noqa: N801
    """The JSON array of ``item`` over the rows of the FROM, in their order ([] for none).

    SQLite 3.40 (Debian 12) has no ORDER BY inside an aggregate: json_group_array takes the
    rows in the order the FROM gives them, so that must be a subquery with ORDER BY and
    LIMIT (SQLite does not flatten such a subquery into an aggregate: its order holds)."""

    type = String()
    inherit_cache = True


@compiles(json_list)
@compiles(json_list, "sqlite")
def _json_list(element: json_list, compiler: SQLCompiler, **kw: Any) -> str:
    return f"json_group_array({compiler.process(element.clauses, **kw)})"


def object_of(shape: type[msgspec.Struct], fields: dict[str, ColumnElement[Any]]) -> ColumnElement[str]:
    """The JSON object of ``shape`` (an API struct) whose fields have these values.

    ``fields`` must name the struct's fields in its order: one definition of the shape."""
    args: list[Any] = []
    for name, value in zip(fields, fields_of(shape, fields), strict=True):
        if not _KEY.match(name):
            raise ValueError(f"not a plain key: {name!r}")
        args += [literal_column(f"'{name}'"), value]
    return func.json_object(*args, type_=String())  # type: ignore[no-any-return]
