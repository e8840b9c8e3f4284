"""The chunk manifests the coordinator signs into sync tickets (shared/manifest.py).

A copy is described by the manifest of its image's guest view, which the agent holding a
staged copy builds (agent/transfer/manifests.py, in the background: the first ask is
answered "building"). The scheduler asks the chain's source each time it starts a chain;
the answer is remembered here per upload (an upload's image never changes, and neither
does its manifest), for the fresh tickets senders ask for later. A replica that has not
seen it (or this one after a restart) asks an agent holding a copy of the upload again:
every copy, whatever its format, has the same guest view and so the same manifest.
"""

from __future__ import annotations

from collections import OrderedDict

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from agent.client import AgentError, AgentUnreachable, AgentUntrusted
from coordinator.agents.links import AgentLinks, NoLiveAgent
from coordinator.db.models import TemplateSyncTask, TemplateUpload
from coordinator.errors import CoordinatorError
from coordinator.states.sync_task import SyncTaskStatus
from shared.messages.transfers import ManifestView

REMEMBERED = 1024
# By (upload id, the uploaded file's sha256): an id alone could be another database's.
_known: OrderedDict[tuple[int, str], ManifestView] = OrderedDict()


class NoManifest(CoordinatorError):
    """No agent could answer the upload's manifest now (``building``: one is making it)."""

    def __init__(
        self, message: str, building: bool = False, cause: AgentError | AgentUnreachable | None = None
    ) -> None:
        super().__init__(message)
        self.building = building
        self.cause = cause  # the agent's refusal, if it refused (say, the copy is gone)


def remember(upload: tuple[int, str], view: ManifestView) -> None:
    _known[upload] = view
    _known.move_to_end(upload)
    while len(_known) > REMEMBERED:
        _known.popitem(last=False)


def known(upload: tuple[int, str]) -> ManifestView | None:
    return _known.get(upload)


async def ask(agents: AgentLinks, node_id: int, staged_name: str, upload: tuple[int, str]) -> ManifestView:
    """``upload``: its id and sha256 (what the answer is remembered by)."""
    """The manifest of the staged copy ``staged_name`` on ``node_id`` (remembered once ready);
    NoManifest while it is being built, or if the agent cannot say."""
    try:
        client = await agents.for_node(node_id)
        view = await client.staged_manifest(staged_name)
    except (AgentError, AgentUnreachable) as exc:
        raise NoManifest(f"the manifest of {staged_name} cannot be had: {exc}", cause=exc) from None
    except (NoLiveAgent, AgentUntrusted) as exc:
        raise NoManifest(f"the manifest of {staged_name} cannot be had: {exc}") from None
    if view.state == "building":
        raise NoManifest(f"the manifest of {staged_name} is being built", building=True)
    if view.state != "ready" or view.digest is None or view.image_sha256 is None:
        raise NoManifest(f"the manifest of {staged_name} could not be built: {view.error}")
    remember(upload, view)
    return view


async def for_upload(session: AsyncSession, agents: AgentLinks, upload: TemplateUpload) -> ManifestView:
    """The upload's manifest: remembered, or asked of a node holding a staged copy."""
    key = (upload.id, upload.sha256)
    view = known(key)
    if view is not None:
        return view
    copies: list[tuple[int, str]] = []
    if upload.staged_name and upload.import_node_id is not None:
        copies.append((upload.import_node_id, upload.staged_name))
    for node_id, name in (
        await session.execute(
            select(TemplateSyncTask.target_node_id, TemplateSyncTask.staged_name).where(
                TemplateSyncTask.upload_id == upload.id,
                TemplateSyncTask.status == SyncTaskStatus.COMPLETED,
                TemplateSyncTask.staged_name != "",
            )
        )
    ).all():
        copies.append((node_id, name))
    reasons = []
    for node_id, name in copies:
        try:
            return await ask(agents, node_id, name, key)
        except NoManifest as exc:
            reasons.append(str(exc))
    raise NoManifest("; ".join(reasons) or f"no node holds a staged copy of upload {upload.id}")
