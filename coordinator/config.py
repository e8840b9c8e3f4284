"""Coordinator settings (TOML file + PVESPHERE_* environment variables)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from coordinator.jobs.limits import ErrorLimits
from shared.config import ConfigError, check_log_format, load_config

ENV_PREFIX = "PVESPHERE_"
DEFAULT_CONFIG_PATH = Path("/etc/pvesphere/coordinator.toml")


@dataclass(frozen=True)
class CoordinatorConfig:
    # Listeners (coordinator/listeners.py): HTTPS on host:port with tls_cert_file and
    # tls_key_file (the API and the agent API); plain_http_port: an extra plain-HTTP listener
    # on 127.0.0.1 only (0: none), for local scripts or a reverse proxy on this host.
    host: str = "127.0.0.1"
    port: int = 8443
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    plain_http_port: int = 0
    # The CA bundle that checks agents' certificates: the pve-root-ca.pem of every cluster
    # managed here, concatenated (default: pve_ca_file, which checks the same clusters' API).
    agent_ca_file: Path | None = None
    # Database: SQLite by default; mysql+asyncmy://user:pass@host/db for MySQL/MariaDB.
    data_dir: Path = Path("/var/lib/pvesphere")
    database_url: str = ""
    # Liveness: agents heartbeat every heartbeat_interval; silent for agent_timeout = not live.
    heartbeat_interval: float = 5.0
    agent_timeout: float = 15.0
    # Inventory: how often nodes/storages are re-read from every registered cluster.
    inventory_refresh_interval: float = 300.0
    # CA bundle used to verify PVE API certificates when a cluster has verify_ssl on.
    pve_ca_file: str = ""
    pve_timeout: float = 15.0
    # Uploads: size caps (file and the image's virtual size), concurrent uploads in all and per
    # API token (429 beyond), the bandwidth of all uploads together in bytes/s (0 = no cap).
    max_upload_bytes: int = 50 << 30
    max_virtual_size: int = 50 << 30
    max_concurrent_uploads: int = 4
    max_uploads_per_token: int = 2
    max_upload_rate: int = 0
    # An upload whose client sends nothing for this long is dropped (its slot freed).
    upload_idle_timeout: float = 60.0
    # A resumable upload (tus, /api/v1/uploads) that gets no PATCH for this long is given up
    # by the janitor (its partial file removed); each PATCH moves the deadline (Upload-Expires).
    resumable_upload_expiry: float = 86400.0
    # VMIDs given to templates.
    template_vmid_min: int = 9000
    template_vmid_max: int = 9999
    # VMIDs given to clones (issue 13): clone_vmid_min..clone_vmid_max, apart from templates';
    # 0 and 0: from PVE's next free id (/cluster/nextid) up.
    clone_vmid_min: int = 0
    clone_vmid_max: int = 0
    # Clones running at once on one node (over every replica); more wait for a free slot.
    max_clones_per_node: int = 2
    # How long to wait for an agent's clone: clone_timeout seconds plus clone_seconds_per_gib
    # for every GiB of the image (a full clone copies the whole disk; a linked one is instant).
    clone_timeout: float = 600.0
    clone_seconds_per_gib: float = 120.0
    # A template's versions kept: older ones than its keep_versions newest imported ones are
    # removed (VMs on every node, images) once no linked clone uses them; the current one never.
    keep_versions: int = 3
    # Seconds between the version pruner's rounds (it also looks when a version is imported,
    # activated or asked to be deleted): a version freed by its last linked clone's removal in
    # PVE goes within one round.
    version_prune_interval: float = 30.0
    # Durable jobs: a worker owns a job while its lease is fresh.
    job_lease_seconds: float = 30.0
    # A job whose handler raises unexpectedly (a bug, an answer the coordinator cannot read;
    # not a database outage) is tried again after job_error_retry_seconds, doubling up to
    # 5 min, until <kind>_max_errors such errors in a row or <kind>_error_deadline seconds
    # since the first of them; then it fails, the reason in its error (an upload's or a sync
    # task's error_message, a cascade delete's deletion.reason). With the defaults the fifth
    # error comes about 2.5 min after the first (10 + 20 + 40 + 80 s of waits).
    job_error_retry_seconds: float = 10.0
    import_max_errors: int = 5
    import_error_deadline: float = 3600.0
    sync_max_errors: int = 5
    sync_error_deadline: float = 3600.0
    # A cascade delete that gave up leaves its template `deleting`; asking again restarts it.
    delete_max_errors: int = 5
    delete_error_deadline: float = 3600.0
    clone_max_errors: int = 5
    clone_error_deadline: float = 3600.0
    # Imports run at once over every replica (each waits on one agent); more wait for a free slot.
    max_concurrent_imports: int = 4
    # How long to wait for an agent's import: import_timeout seconds plus
    # import_seconds_per_gib for every GiB of the image (50 GiB: 8400 s). Longer than the
    # agent's own deadline, so that the agent's reason is normally the one reported.
    import_timeout: float = 900.0
    import_seconds_per_gib: float = 150.0
    # Sync (node-to-node copies). data_plane: "tls" (the default), or "insecure": image bytes
    # between agents in the clear (as PVE's `migration: type=insecure`), still authorised by
    # tickets and checked by digests, for networks where TLS costs more CPU than nodes can give.
    data_plane: str = "tls"
    # Concurrent streams per node, and automatic attempts of a task.
    max_inbound_per_node: int = 2
    max_outbound_per_node: int = 2
    sync_max_attempts: int = 5
    # An attempt to which no stream has brought data for this long has failed (the next resumes).
    sync_idle_timeout: float = 20.0
    # An attempt whose copy is not verified within copy_timeout seconds plus
    # copy_seconds_per_gib for every GiB of the image has failed, however slowly data moves
    # (50 GiB: 6600 s, about 8 MiB/s).
    copy_timeout: float = 600.0
    copy_seconds_per_gib: float = 120.0
    # A failed sync keeps its partial copy on the target (a retry resumes) for this long.
    keep_failed_copies_hours: float = 168.0
    # Every vm_sweep_interval seconds, VMs of ours that no row of the database accounts for
    # (cut off mid-create, left by a failed job) are removed (coordinator/jobs/vm_sweep.py).
    # A round costs one PVE list per node; a leak is found within one interval.
    vm_sweep_interval: float = 300.0
    # Ed25519 key that signs transfer tickets (made on first start; default: data_dir/ticket-signing.key).
    ticket_key_file: Path | None = None
    # /readyz also waits for a registered cluster and a live agent on every online node
    # (the demo: scripts poll /readyz, then use the cluster).
    ready_requires_agents: bool = False
    # Live events (GET /api/v1/events): how many polls' changes (one poll every 0.25 s) may
    # wait for one slow subscriber before it is dropped (close code 4008), how long one
    # message may take to send, and how often a subscriber is pinged (no pong within half
    # of it: the connection is dropped).
    events_queue_max: int = 40
    events_send_timeout: float = 10.0
    events_heartbeat: float = 20.0
    log_level: str = "info"
    # "text" (a line for people) or "json" (one object a line: ts, level, logger, msg and the
    # line's fields, e.g. a state change's ids; README "Metrics and logs").
    log_format: str = "text"

    def error_limits(self, kind: Literal["import", "sync", "delete", "clone"]) -> ErrorLimits:
        """The job engine's limits for one kind of job (see job_error_retry_seconds)."""
        max_errors, deadline = {
            "import": (self.import_max_errors, self.import_error_deadline),
            "sync": (self.sync_max_errors, self.sync_error_deadline),
            "delete": (self.delete_max_errors, self.delete_error_deadline),
            "clone": (self.clone_max_errors, self.clone_error_deadline),
        }[kind]
        return ErrorLimits(max_errors, deadline, retry_first=self.job_error_retry_seconds)

    @property
    def agent_key_file(self) -> Path:
        """The key every node's agent credential is derived from (made on first start)."""
        return self.data_dir / "agent-credential.key"

    @property
    def resolved_ticket_key_file(self) -> Path:
        return self.ticket_key_file or self.data_dir / "ticket-signing.key"

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{self.data_dir / 'coordinator.db'}"


def load(path: Path | None = None, **overrides: object) -> CoordinatorConfig:
    """Load from ``path`` (or $PVESPHERE_CONFIG, or /etc/pvesphere/coordinator.toml if present)."""
    if path is None:
        env_path = os.environ.get(ENV_PREFIX + "CONFIG")
        if env_path:
            path = Path(env_path)
        elif DEFAULT_CONFIG_PATH.exists():
            path = DEFAULT_CONFIG_PATH
    cfg = load_config(CoordinatorConfig, path, ENV_PREFIX, overrides=overrides)
    if not 100 <= cfg.template_vmid_min <= cfg.template_vmid_max <= 999_999_999:
        raise ConfigError("template_vmid_min..template_vmid_max must be a range within 100..999999999")
    if (cfg.clone_vmid_min, cfg.clone_vmid_max) != (0, 0) and not (
        100 <= cfg.clone_vmid_min <= cfg.clone_vmid_max <= 999_999_999
    ):
        raise ConfigError("clone_vmid_min..clone_vmid_max must be a range within 100..999999999 (or both 0)")
    if _overlap((cfg.clone_vmid_min, cfg.clone_vmid_max), (cfg.template_vmid_min, cfg.template_vmid_max)):
        raise ConfigError(
            "clone_vmid_min..clone_vmid_max must not overlap template_vmid_min..template_vmid_max"
        )
    if cfg.max_clones_per_node < 1 or cfg.clone_max_errors < 1 or cfg.clone_error_deadline <= 0:
        raise ConfigError(
            "max_clones_per_node, clone_max_errors must be at least 1, clone_error_deadline > 0"
        )
    if cfg.keep_versions < 1:
        raise ConfigError("keep_versions must be at least 1 (the current version is always kept)")
    if cfg.version_prune_interval <= 0:
        raise ConfigError("version_prune_interval must be more than 0 seconds")
    if cfg.clone_timeout <= 0 or cfg.clone_seconds_per_gib < 0:
        raise ConfigError("clone_timeout must be more than 0 seconds, clone_seconds_per_gib at least 0")
    if cfg.max_inbound_per_node < 1 or cfg.max_outbound_per_node < 1:
        raise ConfigError("max_inbound_per_node and max_outbound_per_node must be at least 1")
    if cfg.sync_max_attempts < 1:
        raise ConfigError("sync_max_attempts must be at least 1")
    if cfg.max_concurrent_uploads < 1 or cfg.max_uploads_per_token < 1:
        raise ConfigError("max_concurrent_uploads and max_uploads_per_token must be at least 1")
    if cfg.max_upload_rate < 0:
        raise ConfigError("max_upload_rate must be 0 (no cap) or a number of bytes per second")
    if cfg.upload_idle_timeout <= 0:
        raise ConfigError("upload_idle_timeout must be more than 0 seconds")
    if cfg.resumable_upload_expiry <= 0:
        raise ConfigError("resumable_upload_expiry must be more than 0 seconds")
    if cfg.vm_sweep_interval <= 0:
        raise ConfigError("vm_sweep_interval must be more than 0 seconds")
    if cfg.sync_idle_timeout <= 0:
        raise ConfigError("sync_idle_timeout must be more than 0 seconds")
    if min(cfg.import_max_errors, cfg.sync_max_errors, cfg.delete_max_errors) < 1:
        raise ConfigError("import_max_errors, sync_max_errors and delete_max_errors must be at least 1")
    deadlines = (cfg.import_error_deadline, cfg.sync_error_deadline, cfg.delete_error_deadline)
    if cfg.job_error_retry_seconds <= 0 or min(deadlines) <= 0:
        raise ConfigError("job_error_retry_seconds and every <kind>_error_deadline must be more than 0 s")
    if cfg.events_queue_max < 1 or cfg.events_send_timeout <= 0 or cfg.events_heartbeat <= 0:
        raise ConfigError("events_queue_max must be at least 1, events_send_timeout and events_heartbeat > 0")
    if cfg.max_concurrent_imports < 1:
        raise ConfigError("max_concurrent_imports must be at least 1")
    if cfg.import_timeout <= 0 or cfg.copy_timeout <= 0:
        raise ConfigError("import_timeout and copy_timeout must be more than 0 seconds")
    if cfg.import_seconds_per_gib < 0 or cfg.copy_seconds_per_gib < 0:
        raise ConfigError("import_seconds_per_gib and copy_seconds_per_gib must be at least 0")
    if (cfg.tls_cert_file is None) != (cfg.tls_key_file is None):
        raise ConfigError("tls_cert_file and tls_key_file are set together (HTTPS needs both)")
    if cfg.data_plane not in ("tls", "insecure"):
        raise ConfigError(f"data_plane must be 'tls' or 'insecure' (got {cfg.data_plane!r})")
    if not 0 <= cfg.plain_http_port <= 65535:
        raise ConfigError("plain_http_port must be 0 (no plain-HTTP listener) or a port number")
    check_log_format(cfg.log_format)
    if cfg.agent_timeout <= cfg.heartbeat_interval:
        raise ConfigError("agent_timeout must be longer than heartbeat_interval")
    return cfg


def _overlap(a: tuple[int, int], b: tuple[int, int]) -> bool:
    return a != (0, 0) and a[0] <= b[1] and b[0] <= a[1]
