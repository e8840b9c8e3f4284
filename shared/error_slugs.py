"""Every error slug on the wire, in one enum: the coordinator's API errors, the agents'
errors (to the coordinator and to peers), transfer refusals, and the kinds an import or a
receive ends with. Both sides of a link compare these members, never free strings, so a
slug renamed on one side is renamed on the other (a StrEnum: the wire value is the text).
"""

from __future__ import annotations

from enum import StrEnum


class ErrorSlug(StrEnum):
    """``data.error`` of a coordinator error envelope, ``error`` of an agent's error body."""

    # -- any request --------------------------------------------------------------------
    INVALID_REQUEST = "invalid_request"
    INVALID_JSON = "invalid_json"
    UNAUTHORIZED = "unauthorized"
    FORBIDDEN = "forbidden"
    ROUTE_NOT_FOUND = "route_not_found"
    METHOD_NOT_ALLOWED = "method_not_allowed"
    EXPECTATION_FAILED = "expectation_failed"
    TOO_LARGE = "too_large"
    HTTP_ERROR = "http_error"
    INTERNAL_ERROR = "internal_error"
    DATABASE_UNAVAILABLE = "database_unavailable"
    # -- resources of the coordinator's API -----------------------------------------------
    AGENT_NOT_FOUND = "agent_not_found"
    CLUSTER_NOT_FOUND = "cluster_not_found"
    NODE_NOT_FOUND = "node_not_found"
    STORAGE_NOT_FOUND = "storage_not_found"
    TEMPLATE_NOT_FOUND = "template_not_found"
    SYNC_TASK_NOT_FOUND = "sync_task_not_found"
    CLUSTER_EXISTS = "cluster_exists"
    # -- PVE as the coordinator reads it (coordinator/inventory/pve_client.py PveError.kind)
    PVE_API = "pve_api"
    PVE_AUTH = "pve_auth"
    PVE_TLS = "pve_tls"
    PVE_INVALID = "pve_invalid"
    PVE_OTHER_CLUSTER = "pve_other_cluster"
    PVE_TIMEOUT = "pve_timeout"
    PVE_UNREACHABLE = "pve_unreachable"
    # -- enrolment and the agent link -----------------------------------------------------
    INVALID_JOIN_TOKEN = "invalid_join_token"
    JOIN_TOKEN_EXPIRED = "join_token_expired"
    WRONG_NODE = "wrong_node"
    INCOMPATIBLE_VERSION = "incompatible_version"
    NOT_A_SENDER = "not_a_sender"
    NOT_SYNCING = "not_syncing"
    STALE_TRANSFER = "stale_transfer"
    # -- uploads and their plan -------------------------------------------------------------
    NODE_NOT_IN_CLUSTER = "node_not_in_cluster"
    STORAGE_MISSING_ON_NODE = "storage_missing_on_node"
    STORAGE_NOT_IN_CLUSTER = "storage_not_in_cluster"
    STORAGE_NO_IMAGES = "storage_no_images"
    STORAGE_CANNOT_HOLD_TEMPLATES = "storage_cannot_hold_templates"
    STORAGE_DISABLED = "storage_disabled"
    SYNC_NODE_IS_SOURCE = "sync_node_is_source"
    SHARED_STORAGE_NO_SYNC = "shared_storage_no_sync"
    TEMPLATE_NAME_TAKEN = "template_name_taken"
    NO_LIVE_AGENT = "no_live_agent"
    TOO_MANY_UPLOADS = "too_many_uploads"
    TOO_MANY_UPLOADS_FOR_TOKEN = "too_many_uploads_for_token"
    UNSUPPORTED_FORMAT = "unsupported_format"
    CLIENT_IDLE = "client_idle"
    INCOMPLETE = "incomplete"
    AGENT_FAILED = "agent_failed"
    IMPORT_FAILED = "import_failed"
    IMAGE_REJECTED = "image_rejected"
    NO_SPACE = "no_space"
    # -- templates and sync tasks -----------------------------------------------------------
    TEMPLATE_DELETING = "template_deleting"
    UPLOAD_RUNNING = "upload_running"
    UPLOAD_ABANDONED = "upload_abandoned"
    UPLOAD_NOT_FOUND = "upload_not_found"  # a resumable upload (tus) of that id
    SYNC_RUNNING = "sync_running"
    SYNC_TASK_ACTIVE = "sync_task_active"
    NO_IMAGE = "no_image"
    NOT_CANCELABLE = "not_cancelable"
    NOT_FAILED = "not_failed"
    NOT_PENDING = "not_pending"
    # -- clones (issue 13; clone_not_found is with the agent's) ----------------------------
    VERSION_NOT_FOUND = "version_not_found"
    NOT_ON_NODE = "not_on_node"  # the template has no available instance there (resolve)
    VMID_TAKEN = "vmid_taken"
    LINKED_CLONE_UNSUPPORTED = "linked_clone_unsupported"
    TARGET_STORAGE_UNUSABLE = "target_storage_unusable"
    HAS_LINKED_CLONES = "has_linked_clones"
    CLONE_RUNNING = "clone_running"
    # -- versions (issue 14) ----------------------------------------------------------------
    VERSION_CURRENT = "version_current"  # the current version is not deleted
    VERSION_NOT_IMPORTED = "version_not_imported"  # only an imported version becomes current
    VERSION_TAKEN = "version_taken"  # another request is making that version number
    # -- live events (issue 15) ---------------------------------------------------------------
    UPGRADE_REQUIRED = "upgrade_required"  # a WebSocket route asked without the upgrade (426)
    # -- an agent's orders ----------------------------------------------------------------
    AGENT_ERROR = "agent_error"  # an agent's error body without a slug
    BAD_RESPONSE = "bad_response"  # an agent's answer that is not what the message says
    AGENT_STOPPING = "agent_stopping"
    IMPORT_NOT_FOUND = "import_not_found"
    CLONE_NOT_FOUND = "clone_not_found"
    VM_NOT_FOUND = "vm_not_found"
    VM_BUSY = "vm_busy"
    NOT_OURS = "not_ours"
    PVE_ERROR = "pve_error"
    MISSING_IMAGE = "missing_image"
    # -- a VM's disk exported to become a template (agent/exporter.py) ----------------------
    VM_RUNNING = "vm_running"
    SNAPSHOT_NOT_FOUND = "snapshot_not_found"
    DISK_NOT_FOUND = "disk_not_found"
    DISK_NOT_EXPORTABLE = "disk_not_exportable"
    EXPORT_NOT_FOUND = "export_not_found"
    EXPORT_FAILED = "export_failed"
    VOLUME_NOT_FOUND = "volume_not_found"
    # -- an image downloaded from a URL to become a template (agent/downloader.py) ----------
    DOWNLOAD_NOT_ALLOWED = "download_not_allowed"
    DOWNLOAD_NOT_FOUND = "download_not_found"
    DOWNLOAD_FAILED = "download_failed"
    CHECKSUM_MISMATCH = "checksum_mismatch"
    # -- transfers (agent/transfer/) --------------------------------------------------------
    BUSY = "busy"
    SIZE_MISMATCH = "size_mismatch"
    RECEIVE_NOT_FOUND = "receive_not_found"
    NOT_REGISTERED = "not_registered"
    BAD_TICKET = "bad_ticket"
    TICKET_USED = "ticket_used"
    STALE_TICKET = "stale_ticket"
    NO_TICKET = "no_ticket"
    COORDINATOR_UNREACHABLE = "coordinator_unreachable"
    RECEIVE_FAILED = "receive_failed"
    SESSION_SUPERSEDED = "session_superseded"
    SESSION_BUSY = "session_busy"
    LENGTH_REQUIRED = "length_required"
    BAD_OFFSET = "bad_offset"
    BAD_FRAME = "bad_frame"
    CORRUPT_CHUNK = "corrupt_chunk"
    CHECKSUM = "checksum"
    STALLED = "stalled"
    TRUNCATED = "truncated"
    SOURCE_GONE = "source_gone"
    STREAM_BROKEN = "stream_broken"


class ImportErrorKind(StrEnum):
    """How an agent's import failed (``error_kind`` of its view): the coordinator decides
    from it whether to choose another VMID, try again later, or give up."""

    PVE_ERROR = "pve_error"
    PVE_UNREACHABLE = "pve_unreachable"
    VMID_TAKEN = "vmid_taken"  # pick another VMID and ask again
    TIMEOUT = "timeout"
    CANCELED = "canceled"
    INTERRUPTED = "interrupted"  # the agent stopped: asked for again once it is back
    BAD_REQUEST = "bad_request"
    MISSING_IMAGE = "missing_image"
    NO_SPACE = "no_space"
    AGENT_ERROR = "agent_error"
