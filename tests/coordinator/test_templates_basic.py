"""Templates list/get/update/soft delete (rows seeded directly; uploads come with the import)."""

from __future__ import annotations

import secrets

import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from coordinator.db.models import VmTemplate
from demo.stack import Stack
from tests.support.api import Api
from tests.support.db import with_session


def seed(stack: Stack, *names: str) -> list[int]:
    async def work(session: AsyncSession) -> list[int]:
        rows = [
            VmTemplate(
                cluster_id=stack.cluster_id,
                template_name=n,
                name_key=n,
                description=f"about {n}",
                creator="seed",
                modifier="seed",
            )
            for n in names
        ]
        session.add_all(rows)
        await session.commit()
        return [r.id for r in rows]

    return with_session(stack.database_url, work)


@pytest.mark.mariadb
def test_list_filter_get(stack: Stack, api: Api) -> None:
    tag = secrets.token_hex(3)
    ids = seed(stack, f"alma9-{tag}", f"debian12-{tag}", f"debian13-{tag}")
    listed = api.get(f"/templates?name={tag}").ok()
    assert listed["total"] == 3
    assert [t["id"] for t in listed["list"]] == sorted(ids, reverse=True)
    debs = api.get(f"/templates?name=debian1&cluster_id={stack.cluster_id}").ok()["list"]
    assert {t["template_name"] for t in debs} >= {f"debian12-{tag}", f"debian13-{tag}"}
    assert api.get(f"/templates?name={tag}&cluster_id=987654").ok()["total"] == 0
    one = api.get(f"/templates/{ids[0]}").ok()
    assert one["template_name"] == f"alma9-{tag}"
    assert one["cluster_id"] == stack.cluster_id and one["cluster_name"] == "pve-demo"
    assert one["description"] == f"about alma9-{tag}"
    assert one["created_at"].endswith("Z") and one["creator"] == "seed"
    # LIKE wildcards in the filter are literal text
    assert api.get("/templates?name=%25").ok()["total"] == 0


@pytest.mark.mariadb
def test_update_and_name_conflict(stack: Stack, api: Api, make_token) -> None:  # type: ignore[no-untyped-def]
    tag = secrets.token_hex(3)
    a, b = seed(stack, f"a-{tag}", f"b-{tag}")
    operator = Api(stack.api, make_token("operator"))
    updated = operator.put(f"/templates/{a}", json={"description": "new text"}).ok()
    assert updated["description"] == "new text" and updated["template_name"] == f"a-{tag}"
    assert updated["modifier"].startswith("operator-")
    renamed = operator.put(f"/templates/{a}", json={"template_name": f"  c-{tag} "}).ok()
    assert renamed["template_name"] == f"c-{tag}"
    clash = operator.put(f"/templates/{a}", json={"template_name": f"b-{tag}"})
    assert clash.status == 409 and clash.error == "template_name_taken"
    assert f"b-{tag}" in clash.message
    assert api.get(f"/templates/{a}").ok()["template_name"] == f"c-{tag}"
    assert operator.put(f"/templates/{a}", json={}).status == 400
    too_long = operator.put(f"/templates/{a}", json={"template_name": "x" * 129})
    assert too_long.status == 400 and "at most 128" in too_long.message
    blank = operator.put(f"/templates/{a}", json={"template_name": "   "})
    assert blank.status == 400 and "must not be empty" in blank.message
    assert operator.put("/templates/987654", json={"description": "x"}).status == 404
    assert operator.put(f"/templates/{b}", json={"colour": "red"}).status == 400


@pytest.mark.mariadb
def test_soft_delete_hides_and_frees_the_name(stack: Stack, api: Api) -> None:
    tag = secrets.token_hex(3)
    (tid,) = seed(stack, f"gone-{tag}")
    deleted = api.delete(f"/templates/{tid}").ok()
    assert deleted == {"id": tid, "deleted": True, "cascade": False, "removed_vms": [], "removed_images": 0}
    assert api.get(f"/templates/{tid}").status == 404
    assert api.get(f"/templates?name=gone-{tag}").ok()["total"] == 0
    assert api.delete(f"/templates/{tid}").status == 404
    (again,) = seed(stack, f"gone-{tag}")  # the name is free again
    assert api.get(f"/templates/{again}").ok()["template_name"] == f"gone-{tag}"

    async def row(session: AsyncSession) -> VmTemplate | None:
        return await session.get(VmTemplate, tid)

    kept = with_session(stack.database_url, row)
    assert kept is not None and kept.deleted_at is not None  # soft: the row stays


@pytest.mark.mariadb
def test_names_differing_only_in_case_are_different_templates(stack: Stack, api: Api) -> None:
    """The same rule on SQLite and MariaDB (whose default collation ignores case)."""
    tag = secrets.token_hex(3)
    upper, lower = seed(stack, f"Alma-{tag}", f"alma-{tag}")
    assert upper != lower
    reply = api.put(f"/templates/{lower}", json={"template_name": f"Alma-{tag}"})
    assert reply.status == 409 and reply.error == "template_name_taken"
