"""This node's own agent credential: enrolled once with a join token, then kept on disk.

The first start trades the join token (``pvesphere-coordinator agent enroll NODE``)
for the node's credential (POST /agent-api/v1/enroll) and stores it, 0600, in
``credential_file``. Later starts use the stored credential and ignore the join token
(it is spent anyway). To enrol a node again (after ``agent revoke``), remove the
credential file and give the agent a new join token.

The agent presents the credential to the coordinator and accepts orders only from a
caller presenting the same credential: the coordinator, which can recompute it.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass

import aiohttp

from agent.config import AgentConfig
from agent.coordinator_link import (
    agent_api,
    answer_data,
    call_coordinator,
    coordinator_session,
    error_message,
    link_failure,
)
from agent.errors import AgentFault
from shared.config import ConfigError
from shared.messages import to_builtins
from shared.messages.link import Enrolled, EnrolRequest
from shared.private_files import replace_private

log = logging.getLogger(__name__)
RETRY_SECONDS = 2.0


class EnrolmentRefused(ConfigError, AgentFault):
    """The coordinator will not enrol this agent with its join token (the message says why)."""


class CoordinatorUnavailable(AgentFault):
    """The coordinator answered, but not with an answer about the join token (try again)."""


@dataclass(frozen=True)
class StoredCredential:
    node: str
    credential: str


def stored(config: AgentConfig) -> StoredCredential | None:
    """The credential this agent enrolled with, if it did (for this node)."""
    path = config.credential_file
    try:
        raw = json.loads(path.read_text())
        found = StoredCredential(str(raw["node"]), str(raw["credential"]))
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ConfigError(f"cannot read credential_file {path}: {exc.strerror}") from None
    except (ValueError, KeyError, TypeError):
        raise ConfigError(f"credential_file {path} is damaged: remove it and enrol again") from None
    if found.node != config.node_name:
        raise ConfigError(
            f"credential_file {path} holds the credential of node {found.node}, but this agent is "
            f"node {config.node_name}: remove the file and enrol with a join token for {config.node_name}"
        )
    return found


async def enroll_once(config: AgentConfig, join_token: str) -> str:
    """Trade the join token for this node's credential and store it; raises EnrolmentRefused,
    or CoordinatorUnavailable, aiohttp or timeout errors (worth trying again)."""
    async with coordinator_session(config, 10) as session:
        status, payload = await call_coordinator(
            session,
            "POST",
            agent_api(config) + "/enroll",
            join_token,
            to_builtins(EnrolRequest(config.node_name)),
        )
    if status >= 500 or not isinstance(payload, dict):
        raise CoordinatorUnavailable(f"coordinator answered {status}: {error_message(payload)}")
    if status != 200:
        raise EnrolmentRefused(f"the coordinator refused the join token: {error_message(payload)}")
    credential = answer_data(Enrolled, payload).credential
    body = json.dumps({"node": config.node_name, "credential": credential}) + "\n"
    replace_private(config.credential_file, body.encode())
    log.info("enrolled node %s; credential stored in %s", config.node_name, config.credential_file)
    return credential


async def credential(config: AgentConfig) -> str:
    """The stored credential, or a new one for the join token (waits for the coordinator)."""
    found = stored(config)
    if found is not None:
        return found.credential
    try:
        join_token = config.resolved_join_token()
    except ConfigError as exc:
        raise ConfigError(
            f"this agent is not enrolled ({config.credential_file} does not exist) and has no join "
            f"token ({exc}): run `pvesphere-coordinator agent enroll {config.node_name}` and set "
            "join_token or join_token_file"
        ) from None
    warned = False
    while True:
        try:
            return await enroll_once(config, join_token)
        except (aiohttp.ClientError, TimeoutError, CoordinatorUnavailable) as exc:
            if not warned:
                log.warning(
                    "cannot enrol with coordinator %s yet: %s (will keep trying)",
                    config.coordinator_url,
                    link_failure(exc),
                )
                warned = True
            await asyncio.sleep(RETRY_SECONDS)
