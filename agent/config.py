"""Agent settings (TOML file + PVESPHERE_AGENT_* environment variables)."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path

from agent.download_policy import DEFAULT_DOWNLOAD_HOSTS, HostAllowlist
from agent.staging_budget import DEFAULT_BUDGET, BadBudget, Budget, parse_budget
from shared.config import ConfigError, check_log_format, load_config, read_secret

ENV_PREFIX = "PVESPHERE_AGENT_"
DEFAULT_CONFIG_PATH = Path("/etc/pvesphere/agent.toml")


@dataclass(frozen=True)
class AgentConfig:
    # The PVE node this agent runs on (PVE uses the short host name).
    node: str = ""
    host: str = "0.0.0.0"
    port: int = 8090
    # How the coordinator and peers reach this agent (https only); default https://<fqdn>:<port>.
    advertise_url: str = ""
    coordinator_url: str = ""
    # TLS. The agent serves HTTPS only, with this node's own certificate: on PVE the one the
    # cluster CA issued (pve-ssl.pem), so nothing needs setting up. Peer agents are checked
    # against the cluster CA (tls_ca_file), the coordinator against coordinator_ca_file
    # (empty: the system's trust store); both also by the host name in their URL.
    tls_cert_file: Path = Path("/etc/pve/local/pve-ssl.pem")
    tls_key_file: Path = Path("/etc/pve/local/pve-ssl.key")
    tls_ca_file: Path = Path("/etc/pve/pve-root-ca.pem")
    coordinator_ca_file: Path | None = None
    # The single-use join token of `pvesphere-coordinator agent enroll NODE`: the first start
    # trades it for this node's own credential; later starts ignore it.
    join_token: str = ""
    join_token_file: Path | None = None
    # Where this node's credential is kept (0600) once enrolled.
    credential_file: Path = Path("/var/lib/pvesphere-agent/credential")
    staging_dir: Path = Path("/var/lib/pvesphere-agent/staging")
    # What staging may keep: a share of its filesystem ("20%") or a size ("50G", "512M", bytes).
    # Past it, copies no pending or running work needs are evicted, least recently used first.
    staging_budget: str = DEFAULT_BUDGET
    # "local": pvesh/qm on this host as root (production). "https": an API token (off-host).
    pve_backend: str = "local"
    pve_api_url: str = ""
    pve_token_id: str = ""
    pve_token_secret: str = ""
    pve_verify_ssl: bool = True
    pve_ca_file: str = ""
    # Seconds an ordinary PVE call may take. A call that starts a PVE task (pvesh runs
    # it in the foreground) may take as long as that task's deadline instead.
    pve_timeout: float = 120.0
    # Deadline of an import's PVE tasks (disk import, conversion to a template):
    # import_timeout seconds plus import_seconds_per_gib for every GiB of the image (an
    # export of a VM's disk too: the same qemu-img work)
    # (50 GiB: 6600 s, about 8 MiB/s). When it passes the task is stopped and the import fails.
    import_timeout: float = 600.0
    import_seconds_per_gib: float = 120.0
    # Cap on what this agent sends to peers, bytes per second for all streams together (0: none).
    max_send_rate: int = 0
    # Hosts an image may be downloaded from (POST /templates/from-url), by https only: names
    # separated by commas, exact or "*.example.org" for its subdomains; an IP address or
    # localhost only if listed. Redirects must stay on the list too.
    download_hosts: str = DEFAULT_DOWNLOAD_HOSTS
    # An extra CA file trusted for downloads besides the system's (an internal mirror's).
    download_cacert: Path | None = None
    # zstd on the wire between agents, offered when sending and accepted when receiving,
    # used only while it makes the image cross faster (shared/wire_codec.py).
    wire_compression: bool = True
    # Announce this agent with mDNS/zeroconf (_pvesphere-agent._tcp) besides registering.
    mdns: bool = True
    log_level: str = "info"
    # "text" or "json" (one object a line), as the coordinator's log_format.
    log_format: str = "text"

    @property
    def node_name(self) -> str:
        return self.node or socket.gethostname().split(".")[0]

    @property
    def vm_journal_file(self) -> Path:
        """The VMIDs this agent is creating (agent/vm_journal.py): beside the credential, in the
        agent's own state directory (kept across restarts, unlike staging's contents)."""
        return self.credential_file.parent / "vm-journal.json"

    @property
    def url(self) -> str:
        if self.advertise_url:
            return self.advertise_url.rstrip("/")
        return f"https://{socket.getfqdn()}:{self.port}"

    @property
    def budget(self) -> Budget:
        return parse_budget(self.staging_budget)

    def resolved_join_token(self) -> str:
        return read_secret(self.join_token, self.join_token_file, "join_token")


def load(path: Path | None = None, **overrides: object) -> AgentConfig:
    if path is None:
        env_path = os.environ.get(ENV_PREFIX + "CONFIG")
        if env_path:
            path = Path(env_path)
        elif DEFAULT_CONFIG_PATH.exists():
            path = DEFAULT_CONFIG_PATH
    cfg = load_config(AgentConfig, path, ENV_PREFIX, overrides=overrides)
    if cfg.pve_backend not in ("local", "https"):
        raise ConfigError(f"pve_backend must be 'local' or 'https' (got {cfg.pve_backend!r})")
    if cfg.pve_backend == "https" and not (cfg.pve_api_url and cfg.pve_token_id and cfg.pve_token_secret):
        raise ConfigError("pve_backend 'https' needs pve_api_url, pve_token_id and pve_token_secret")
    if cfg.pve_timeout <= 0 or cfg.import_timeout <= 0 or cfg.import_seconds_per_gib < 0:
        raise ConfigError(
            "pve_timeout and import_timeout must be more than 0 s, import_seconds_per_gib at least 0"
        )
    check_log_format(cfg.log_format)
    try:
        HostAllowlist.parse(cfg.download_hosts)
        parse_budget(cfg.staging_budget)
    except (BadBudget, ValueError) as exc:
        raise ConfigError(str(exc)) from None
    if not cfg.coordinator_url:
        raise ConfigError(f"coordinator_url is not set (or ${ENV_PREFIX}COORDINATOR_URL)")
    # This node's credential and join token go to the coordinator, and images to peers:
    # never over plain HTTP.
    for name in ("coordinator_url", "advertise_url"):
        url = getattr(cfg, name)
        if url and not url.lower().startswith("https://"):
            raise ConfigError(f"{name} must be an https:// URL (got {url!r}): agents speak HTTPS only")
    return cfg
