"""Receiving an image from a peer: sessions, chunk checks, writes at offsets, resume.

One ``Receive`` per sync task, kept across agent restarts::

    staging/<name>.part              the image as far as it came; [0, verified) is checked
    staging/receives/<task uid>.json what it is (size, sha256, format) and how far it is
    staging/receives/<task uid>.manifest  its chunk manifest (shared/manifest.py)
    staging/receives/used-tickets.json  tickets already spent (until they expire)
    staging/<name>                   the complete image, once its sha256 matched

A peer opens a session with a ticket and the copy's chunk manifest, whose sha256 the
ticket carries (``open_session``). The target plans every chunk (a hole for zeros, a
copy of a chunk it already holds, or the network: shared/manifest.py ``plan``) and
answers the offset to go on from and the chunks the stream must carry; then the peer
streams those frames (``stream``). chunk_writer.py checks each one (and each chunk it
makes itself) before writing it, in order, so the partial file is always a verified
prefix and a broken stream (or a killed agent) resumes from its end. At the end the
sha256 of the whole guest view must be the ticket's, or the copy is thrown away. The
copy is raw: the image as the guest sees it.

Receives are keyed by the task's uid (in its tickets), not its id: a task id can come
back (SQLite reuses a deleted row's id; two coordinators may number tasks alike), and
state of the old task must not make the new one look like a stale attempt.

A session that names further hops starts a forwarder that relays the verified bytes to
the next node (see send.py), so a fan-out crosses each link once.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import secrets
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

from agent.metrics import AgentMetrics
from agent.staging import Staging
from agent.transfer.chunk_writer import (
    ChunkCorrupt,
    ChunkPlan,
    ChunkWriter,
    CopyDiskFull,
    RunningHash,
    SeedCorrupt,
)
from agent.transfer.errors import TransferRefused
from agent.transfer.frame_reader import StreamTruncated
from agent.transfer.guest_view import GuestLayout, identity
from agent.transfer.policy import PeerPolicy
from agent.transfer.seeds import Seeds, SeedSet
from agent.transfer.send import Sender
from agent.transfer.used_tickets import UsedTickets
from shared.error_slugs import ErrorSlug
from shared.frames import CHUNK, Frame, FrameError
from shared.manifest import Manifest, ManifestInvalid, Source, decode, needed_bitmap, plan
from shared.messages.transfers import Hop, ReceiveState, ReceiveView
from shared.tickets import Ticket, TicketInvalid
from shared.wire_codec import choose

log = logging.getLogger(__name__)

# Free space left on the staging disk besides the image.
SPACE_RESERVE = 64 << 20
# A session that moves no bytes for this long is dropped (the sender is gone).
STALL_SECONDS = 60.0
# The record is saved (counters, for the coordinator after a restart) at most this often.
SAVE_EVERY = 1.0
# Chunks kept in memory after they land, for relays to forward (memory: this many x CHUNK).
RECENT_FRAMES = 3


RecordState = Literal["receiving", "complete", "failed"]


@dataclass
class ReceiveRecord:
    """What is saved about a receive (staging/receives/<task uid>.json)."""

    task_id: int
    task_uid: str
    epoch: int
    size: int
    sha256: str
    fmt: str
    name: str
    verified: int = 0
    state: RecordState = "receiving"  # receiving -> complete, or failed
    error: str | None = None
    error_kind: ErrorSlug | None = None
    corrupt_chunks: int = 0
    received_bytes: int = 0  # payload that arrived, re-sent bytes included
    # Where the latest session began (what earlier ones had verified). Not per stream: a
    # session whose compressed stream gave up goes on in a plain one, which resumes nothing.
    resumed_from: int = 0
    manifest: str = ""  # sha256 of the chunk manifest (the ticket's)
    reused_bytes: int = 0  # bytes made here: zeros, and chunks taken from seeds
    corrupt_reused: int = 0  # seed chunks that failed their manifest check
    refused_seeds: list[int] = field(default_factory=list)  # their indexes: from the network now


# A session holds its inbound slot from the handshake on, if its stream starts soon.
SESSION_START_GRACE = 30.0


@dataclass
class Session:
    id: str
    epoch: int
    opened_at: float
    streaming: bool = False
    started: bool = False
    codec: str | None = None  # the payload compression its frames may use (wire_codec.py)
    peer: str = ""  # the sending node, as its request said (metrics only)

    def holds_slot(self) -> bool:
        if self.streaming:
            return True
        return not self.started and time.monotonic() - self.opened_at < SESSION_START_GRACE


class RateMeter:
    """Bytes per second over the last few seconds."""

    def __init__(self, window: float = 3.0) -> None:
        self.window = window
        self.samples: deque[tuple[float, int]] = deque()

    def add(self, value: int) -> None:
        now = time.monotonic()
        self.samples.append((now, value))
        while len(self.samples) > 2 and now - self.samples[0][0] > self.window:
            self.samples.popleft()

    def rate(self) -> int:
        if len(self.samples) < 2:
            return 0
        (t0, v0), (t1, v1) = self.samples[0], self.samples[-1]
        if time.monotonic() - t1 > self.window:
            return 0
        return int((v1 - v0) / max(t1 - t0, 1e-3))


class Receive:
    def __init__(self, staging: Staging, record: ReceiveRecord) -> None:
        self.staging = staging
        self.rec = record
        self.session: Session | None = None
        self.forwarder: asyncio.Task[None] | None = None
        self.forward_key: tuple[str, int] | None = None
        self.meter = RateMeter()
        self._grew = asyncio.Event()
        self.running = RunningHash()
        # The last chunks that landed, while relaying: forwarded from memory, not from disk.
        self.recent: deque[Frame] = deque(maxlen=RECENT_FRAMES)
        self._saved_at = 0.0
        self.manifest: Manifest | None = None
        self.manifest_raw = b""
        self.sources: list[Source] = []  # this session's plan
        self.seeds = SeedSet()  # what this node holds of the image (this session's)

    # -- files ---------------------------------------------------------------------------

    @property
    def part_path(self) -> Path:
        return self.staging.part_path(self.rec.name)

    @property
    def path(self) -> Path:
        return self.staging.path(self.rec.name)

    @property
    def state_path(self) -> Path:
        return self.staging.root / "receives" / f"{self.rec.task_uid}.json"

    @property
    def manifest_path(self) -> Path:
        return self.state_path.with_suffix(".manifest")

    @property
    def size(self) -> int:
        return self.rec.size

    def keep_manifest(self, manifest: Manifest, raw: bytes) -> None:
        self.manifest, self.manifest_raw = manifest, raw
        if not self.manifest_path.exists():
            self.state_path.parent.mkdir(exist_ok=True)
            tmp = self.manifest_path.with_suffix(".tmp")
            tmp.write_bytes(raw)
            os.replace(tmp, self.manifest_path)

    def load_manifest(self) -> None:
        """The manifest kept with the record (after a restart), if it is the record's."""
        try:
            raw = self.manifest_path.read_bytes()
            manifest = decode(raw)
        except (FileNotFoundError, ManifestInvalid):
            return
        if hashlib.sha256(raw).hexdigest() == self.rec.manifest:
            self.manifest, self.manifest_raw = manifest, raw

    def plan(self) -> bytes:
        """Where each chunk comes from, for the next stream; the needed chunks' bitmap."""
        assert self.manifest is not None
        self.sources = plan(self.manifest, self.seeds.held, frozenset(self.rec.refused_seeds))
        return needed_bitmap(self.sources)

    def chunk_plan(self) -> ChunkPlan:
        manifest, seeds = self.manifest, self.seeds
        assert manifest is not None

        def seed_chunk(index: int) -> bytes | None:
            return seeds.read(manifest.chunks[index], manifest.span(index)[1])

        return ChunkPlan(manifest, self.sources, seed_chunk)

    def next_from_network(self, offset: int) -> int:
        """The offset of the first chunk at or after ``offset`` the network must bring (the
        size if none)."""
        assert self.manifest is not None
        for index in range(self.manifest.index(offset + self.manifest.chunk - 1), len(self.sources)):
            if self.sources[index] is Source.NET:
                return self.manifest.span(index)[0]
        return self.size

    def data_left(self) -> int:
        """Bytes of chunks not yet verified that are not zeros (what the disk must take at most)."""
        if self.manifest is None:
            return self.size - self.rec.verified
        return self.manifest.data_bytes(self.rec.verified - self.rec.verified % self.manifest.chunk)

    def chunk_length(self, offset: int) -> int:
        assert self.manifest is not None
        return self.manifest.span(self.manifest.index(offset))[1]

    def reused(self, length: int) -> None:
        self.rec.reused_bytes += length

    def save(self) -> None:
        self.state_path.parent.mkdir(exist_ok=True)
        tmp = self.state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self.rec)))
        os.replace(tmp, self.state_path)
        self._saved_at = time.monotonic()

    def discard_data(self) -> None:
        self.recent.clear()
        self.rec.reused_bytes = 0
        self.part_path.unlink(missing_ok=True)
        self.path.unlink(missing_ok=True)
        self.rec.verified = 0
        self.running = RunningHash()

    def keep_verified(self) -> None:
        """Cut the partial file back to its verified prefix (a write that failed half way,
        say on a full disk, may have left part of a chunk behind it)."""
        with contextlib.suppress(FileNotFoundError):
            os.truncate(self.part_path, self.rec.verified)

    def landed(self, frame: Frame, end: int) -> None:
        """A chunk is verified and written (ChunkWriter calls this on the event loop)."""
        if self.forwarder is not None and not self.forwarder.done() and frame.digest:
            # The frame's buffer is reused once it is hashed: a relay gets a copy. (Zero
            # chunks, which have no transit digest, are never sent on.)
            self.recent.append(frame.detached())
        self.rec.verified = end
        self.meter.add(end)
        self._advanced()
        if time.monotonic() - self._saved_at >= SAVE_EVERY:
            self.save()

    # -- what forwarders wait on ----------------------------------------------------------

    async def wait_until(self, end: int) -> None:
        """Until [0, end) is verified here; raises if this copy failed or went away."""
        while self.rec.verified < end:
            if self.rec.state == "failed":
                raise TransferRefused(410, ErrorSlug.SOURCE_GONE, f"relay copy failed: {self.rec.error}")
            self._grew.clear()
            await self._grew.wait()

    def readable_path(self) -> Path:
        return self.path if self.rec.state == "complete" else self.part_path

    def staged_name(self) -> str:
        return self.readable_path().name

    def layout(self) -> GuestLayout:
        return GuestLayout(identity(self.size))  # a received copy is the raw guest view

    def whole(self) -> bool:
        return self.rec.state == "complete"

    def cached(self, offset: int, length: int) -> tuple[bytes, list[memoryview]] | None:
        """A chunk that just landed, as (digest, payload pieces), if it is exactly this range."""
        for frame in self.recent:
            if frame.offset == offset and frame.length == length:
                return frame.digest, frame.pieces
        return None

    def _advanced(self) -> None:
        self._grew.set()

    # -- state for the coordinator --------------------------------------------------------

    def view(self) -> ReceiveView:
        state: ReceiveState = self.rec.state
        if state == "receiving" and not (self.session and self.session.streaming):
            state = "idle"
        return ReceiveView(
            task_id=self.rec.task_id,
            task_uid=self.rec.task_uid,
            epoch=self.rec.epoch,
            state=state,
            size=self.rec.size,
            verified=self.rec.verified,
            rate_bytes_per_sec=self.meter.rate() if state == "receiving" else 0,
            error=self.rec.error,
            error_kind=self.rec.error_kind,
            corrupt_chunks=self.rec.corrupt_chunks,
            received_bytes=self.rec.received_bytes,
            resumed_from=self.rec.resumed_from,
            staged_name=self.rec.name if self.rec.state == "complete" else None,
            forwarding=self.forwarder is not None and not self.forwarder.done(),
            reused_bytes=self.rec.reused_bytes,
            corrupt_reused=self.rec.corrupt_reused,
        )

    def complete(self) -> None:
        os.rename(self.part_path, self.path)
        self.staging.fsync_dir()
        self.rec.state = "complete"
        self.save()


class Receives:
    """Every receive on this agent, and the sessions that feed them."""

    def __init__(
        self,
        staging: Staging,
        node: str,
        policy: PeerPolicy,
        sender: Sender,
        seeds: Seeds | None = None,
        metrics: AgentMetrics | None = None,
    ) -> None:
        self.staging = staging
        self.metrics = metrics if metrics is not None else sender.metrics
        self.seeds = seeds if seeds is not None else Seeds(staging.root / "receives" / "seeds", None)
        self.node = node
        self.policy = policy
        self.sender = sender
        self.receives: dict[str, Receive] = {}  # by task uid
        self._used_tickets = UsedTickets(staging.root / "receives" / "used-tickets.json")
        self._load()

    def _load(self) -> None:
        folder = self.staging.root / "receives"
        folder.mkdir(exist_ok=True)
        known: set[str] = set()
        for path in folder.glob("*.json"):
            if path.name == "used-tickets.json":
                continue
            try:
                fields = json.loads(path.read_text())
                # Saved before receives had uids: the uid the upgrade gave the task (0003_transfer).
                fields.setdefault("task_uid", f"{int(fields['task_id']):032x}")
                rec = ReceiveRecord(**fields)
            except (ValueError, TypeError, KeyError) as exc:
                log.warning("ignoring unreadable receive state %s: %s", path, exc)
                continue
            receive = Receive(self.staging, rec)
            if path != receive.state_path:
                os.replace(path, receive.state_path)
            receive.load_manifest()
            if rec.state == "receiving":
                # The partial file is a verified prefix (chunks land in order): its length is
                # how far the copy got, even if the agent died before saving its record.
                try:
                    rec.verified = min(receive.part_path.stat().st_size, rec.size)
                except FileNotFoundError:
                    rec.verified = 0
                if rec.verified < rec.size and rec.verified % CHUNK:
                    # A chunk torn by the kill (written in part): only whole chunks count.
                    rec.verified -= rec.verified % CHUNK
                    receive.keep_verified()
            if rec.state == "complete" and not receive.path.exists():
                rec.state, rec.verified = "receiving", 0
            self.receives[rec.task_uid] = receive
            known.add(rec.name)
        for part in self.staging.root.glob("sync-*.part"):
            if part.name.removesuffix(".part") not in known:
                part.unlink(missing_ok=True)

    @property
    def inbound(self) -> int:
        return sum(1 for r in self.receives.values() if r.session is not None and r.session.holds_slot())

    def get(self, task_id: int, task_uid: str | None = None) -> Receive | None:
        """The receive of that task; without a uid (people, tests), the last one of that task id
        this agent made or loaded."""
        if task_uid is not None:
            receive = self.receives.get(task_uid)
            return receive if receive is not None and receive.rec.task_id == task_id else None
        return next((r for r in reversed(self.receives.values()) if r.rec.task_id == task_id), None)

    # -- sessions -------------------------------------------------------------------------

    def _check_ticket(self, task_id: int, token: str) -> Ticket:
        tickets = self.policy.tickets
        if tickets is None:
            raise TransferRefused(
                503, ErrorSlug.NOT_REGISTERED, "this agent has not registered with a coordinator yet"
            )
        try:
            ticket = tickets.verify(token)
        except TicketInvalid as exc:
            raise TransferRefused(403, ErrorSlug.BAD_TICKET, str(exc)) from None
        if ticket.task_id != task_id or ticket.node != self.node:
            raise TransferRefused(
                403,
                ErrorSlug.BAD_TICKET,
                f"ticket is for task {ticket.task_id} on {ticket.node}, not this transfer",
            )
        if ticket.jti in self._used_tickets:
            raise TransferRefused(403, ErrorSlug.TICKET_USED, "ticket was already used (replay refused)")
        return ticket

    @staticmethod
    def _check_manifest(ticket: Ticket, raw: bytes) -> Manifest:
        """The session's manifest, if it is the one the coordinator signed in the ticket."""
        if hashlib.sha256(raw).hexdigest() != ticket.manifest:
            raise TransferRefused(
                403, ErrorSlug.BAD_TICKET, "the chunk manifest is not the one the ticket was signed for"
            )
        try:
            manifest = decode(raw)
        except ManifestInvalid as exc:
            raise TransferRefused(400, ErrorSlug.INVALID_REQUEST, str(exc)) from None
        if (manifest.size, manifest.image_sha256) != (ticket.size, ticket.sha256):
            raise TransferRefused(
                403, ErrorSlug.BAD_TICKET, "the chunk manifest is of another image than the ticket's"
            )
        return manifest

    def _promised(self, other_than: Receive | None) -> int:
        """What the other running receives will still write: promised to them already."""
        return sum(
            r.data_left()
            for r in self.receives.values()
            if r is not other_than and r.session is not None and r.session.holds_slot()
        )

    def room_wanted(self, task_id: int, token: str, manifest_raw: bytes) -> int:
        """The staging space a session for this ticket would need (its missing bytes that
        are not zeros, and what other receives were promised); checks the ticket and the
        manifest, so that only a transfer the coordinator signed can make the agent evict
        copies for it."""
        ticket = self._check_ticket(task_id, token)
        manifest = self._check_manifest(ticket, manifest_raw)
        receive = self.receives.get(ticket.task_uid)
        verified = (
            receive.rec.verified if receive is not None and receive.rec.manifest == ticket.manifest else 0
        )
        if receive is not None and receive.rec.state == "complete" and verified:
            return 0
        return manifest.data_bytes(verified - verified % manifest.chunk) + self._promised(receive)

    def open_session(
        self,
        task_id: int,
        token: str,
        next_hops: list[Hop],
        manifest_raw: bytes,
        seeds: SeedSet | None = None,
        codecs: list[str] | None = None,
    ) -> tuple[Session, Receive, bytes]:
        """Check the ticket, its manifest and the limits; returns the session, the receive
        (where to go on from) and the bitmap of the chunks the stream must carry."""
        ticket = self._check_ticket(task_id, token)
        manifest = self._check_manifest(ticket, manifest_raw)
        receive = self.receives.get(ticket.task_uid)
        if receive is not None and ticket.epoch < receive.rec.epoch:
            raise TransferRefused(
                409,
                ErrorSlug.STALE_TICKET,
                f"ticket is for attempt {ticket.epoch}, task is at {receive.rec.epoch}",
            )
        if receive is not None and (receive.rec.size, receive.rec.sha256, receive.rec.manifest) != (
            ticket.size,
            ticket.sha256,
            ticket.manifest,
        ):
            self._drop(receive)  # another image under the same task: start over
            receive = None
        busy = self.inbound - int(bool(receive and receive.session and receive.session.holds_slot()))
        if busy >= self.policy.max_inbound:
            raise TransferRefused(429, ErrorSlug.BUSY, f"{self.node} already receives {busy} image(s)")
        forward_key = (next_hops[0].task_uid, ticket.epoch) if next_hops else None
        keeps_forwarder = (
            receive is not None
            and receive.forwarder is not None
            and not receive.forwarder.done()
            and receive.forward_key == forward_key
        )
        if forward_key and not keeps_forwarder and self.sender.outbound >= self.policy.max_outbound:
            raise TransferRefused(
                429, ErrorSlug.BUSY, f"{self.node} already sends {self.sender.outbound} image(s)"
            )
        if receive is None:
            name = self.staging.new_name("sync", task_id, ticket.fmt)
            receive = Receive(
                self.staging,
                ReceiveRecord(
                    task_id,
                    ticket.task_uid,
                    ticket.epoch,
                    ticket.size,
                    ticket.sha256,
                    ticket.fmt,
                    name,
                    manifest=ticket.manifest,
                ),
            )
            self.receives[ticket.task_uid] = receive
        receive.keep_manifest(manifest, manifest_raw)
        rec = receive.rec
        if rec.state == "failed":
            if ticket.epoch <= rec.epoch:
                # The coordinator decides whether to try again (a new attempt, a newer ticket).
                raise TransferRefused(409, ErrorSlug.RECEIVE_FAILED, f"this copy failed: {rec.error}")
            rec.state, rec.error, rec.error_kind = "receiving", None, None
        rec.epoch = ticket.epoch
        if rec.state != "complete":
            missing = receive.data_left()
            free = self.staging.free_bytes() - self._promised(receive)
            if missing + SPACE_RESERVE > free:  # (what is verified stays: a retry resumes)
                self._fail(
                    receive,
                    ErrorSlug.NO_SPACE,
                    f"staging disk on {self.node} is too small: {max(free, 0)} bytes free for this copy, "
                    f"it needs {missing} more (+{SPACE_RESERVE} kept in reserve)",
                )
                raise TransferRefused(507, ErrorSlug.NO_SPACE, rec.error or "no space")
        receive.seeds = seeds if seeds is not None else SeedSet()
        needed = receive.plan() if rec.state != "complete" else b""
        receive.save()
        self._used_tickets.add(ticket.jti, ticket.expires_at)
        session = Session(secrets.token_urlsafe(24), ticket.epoch, time.monotonic())
        session.codec = choose(codecs or [], self.sender.codecs)
        if rec.state != "complete":  # (a complete copy needs no stream: it holds no slot)
            receive.session = session  # a newer session replaces an older one (its stream ends)
        if forward_key and not keeps_forwarder:
            if receive.forwarder is not None:
                receive.forwarder.cancel()
            receive.forwarder = self.sender.start(f"relay-{task_id}-{ticket.epoch}", receive, next_hops)
            receive.forward_key = forward_key
        return session, receive, needed

    def take_seeds(self, session: Session, receive: Receive, seeds: SeedSet) -> bytes:
        """The session's plan again, now that its seeds are known (routes.py resolves them
        after ``open_session``, so that a relay's next hop opens its session meanwhile);
        the bitmap of the chunks the stream must carry."""
        if receive.session is not session or receive.rec.state == "failed":
            raise TransferRefused(
                409, ErrorSlug.SESSION_SUPERSEDED, "this session is not the task's current one"
            )
        if receive.rec.state == "complete" or session.started:
            return b""
        receive.seeds = seeds
        needed = receive.plan()
        receive.save()
        return needed

    def manifest_of(self, name: str) -> Manifest | None:
        """The signed manifest of the complete copy staged as ``name``, if one is."""
        for receive in self.receives.values():
            if receive.rec.name == name and receive.rec.state == "complete":
                return receive.manifest
        return None

    def _fail(self, receive: Receive, kind: ErrorSlug, message: str) -> None:
        receive.rec.state, receive.rec.error_kind, receive.rec.error = "failed", kind, message
        try:
            receive.save()
        except OSError as exc:  # a full disk cannot take the record either: memory must do
            log.warning("task %s: state not saved: %s", receive.rec.task_id, exc)
        receive._advanced()
        log.warning("receive for task %s failed: %s", receive.rec.task_id, message)

    async def stream(self, task_id: int, session_id: str, frames: AsyncIterator[Frame]) -> ReceiveView:
        """Check and write the frames of one stream of the task's current session."""
        receive = next(
            (
                r
                for r in self.receives.values()
                if r.rec.task_id == task_id and r.session is not None and r.session.id == session_id
            ),
            None,
        )
        if receive is None or receive.session is None:
            raise TransferRefused(
                409, ErrorSlug.SESSION_SUPERSEDED, "this session is not the task's current one"
            )
        session = receive.session
        if session.streaming:
            raise TransferRefused(409, ErrorSlug.SESSION_BUSY, "a stream is already running in this session")
        if receive.rec.state == "complete":
            return receive.view()
        if not session.started:
            receive.rec.resumed_from = receive.rec.verified
        session.streaming = session.started = True
        fd = os.open(receive.part_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        writer = ChunkWriter(
            fd,
            receive.part_path,
            receive.rec.verified,
            receive.running,
            receive.landed,
            receive.chunk_plan(),
            receive.reused,
        )
        began = time.perf_counter()
        try:
            await writer.prepare()
            writer.phases["prepare"] += time.perf_counter() - began
            expected = receive.rec.verified
            loop = asyncio.get_running_loop()
            # One deadline pushed forward as data comes (wait_for per frame would make a
            # task for every read).
            stall = asyncio.timeout(STALL_SECONDS)
            try:
                async with stall:
                    async for frame in frames:
                        stall.reschedule(loop.time() + STALL_SECONDS)
                        wire = frame.length
                        if frame.inflates_to is not None:
                            if session.codec is None:
                                frame.release()
                                raise FrameError("a compressed frame in a session that agreed on none")
                            frame = await asyncio.to_thread(frame.inflated)
                        if receive.session is not session:
                            raise TransferRefused(
                                409, ErrorSlug.SESSION_SUPERSEDED, "a newer session took over"
                            )
                        expected = receive.next_from_network(expected)
                        if frame.offset != expected:
                            raise TransferRefused(
                                400, ErrorSlug.BAD_OFFSET, f"frame at {frame.offset}, expected {expected}"
                            )
                        if expected >= receive.rec.size or frame.length != receive.chunk_length(expected):
                            raise TransferRefused(
                                400,
                                ErrorSlug.BAD_OFFSET,
                                f"frame at {frame.offset} is not one chunk of the image",
                            )
                        expected += frame.length
                        receive.rec.received_bytes += wire
                        self.metrics.received_from(session.peer, wire)
                        await writer.write(frame)
                        stall.reschedule(loop.time() + STALL_SECONDS)  # (it may have made chunks first)
            except TimeoutError:
                if not stall.expired():
                    raise  # a write's own ETIMEDOUT, not a silent sender
                raise TransferRefused(408, ErrorSlug.STALLED, f"no data for {STALL_SECONDS:.0f} s") from None
            except StreamTruncated as exc:
                raise TransferRefused(400, ErrorSlug.TRUNCATED, str(exc)) from None
            streamed = time.perf_counter()
            await writer.drain()
            await writer.fill_rest(receive.rec.size)
            filled = time.perf_counter()
            writer.phases["after last frame"] += filled - streamed
            if receive.rec.verified == receive.rec.size:
                ok = await writer.finish(receive.rec.sha256)
                writer.phases["finish"] += time.perf_counter() - filled
                if not ok:
                    self.metrics.refused("image_checksum")
                    receive.discard_data()
                    self._fail(
                        receive, ErrorSlug.CHECKSUM, "sha256 of the received image does not match the upload"
                    )
                    raise TransferRefused(422, ErrorSlug.CHECKSUM, receive.rec.error or "checksum mismatch")
                receive.complete()
                receive._advanced()
                receive.session = None
                log.info(
                    "task %s: received %s (%d bytes, %d reused), sha256 verified; stream %.2f s: %s",
                    task_id,
                    receive.rec.name,
                    receive.rec.size,
                    receive.rec.reused_bytes,
                    time.perf_counter() - began,
                    writer.phase_summary(),
                )
            return receive.view()
        except SeedCorrupt as exc:
            self.metrics.corrupt_reused.inc()
            receive.rec.corrupt_reused += 1
            receive.rec.refused_seeds.append(exc.index)
            log.warning("task %s: %s; it comes over the network now", task_id, exc)
            raise TransferRefused(422, ErrorSlug.CORRUPT_CHUNK, str(exc)) from None
        except ChunkCorrupt as exc:
            self.metrics.refused("digest_mismatch")
            receive.rec.corrupt_chunks += 1
            log.warning("task %s: %s; the sender resumes from %d", task_id, exc, receive.rec.verified)
            raise TransferRefused(422, ErrorSlug.CORRUPT_CHUNK, str(exc)) from None
        except CopyDiskFull as exc:
            await writer.close()  # before the file is cut: its threads may still write to it
            receive.keep_verified()
            self._fail(
                receive,
                ErrorSlug.NO_SPACE,
                f"{exc} on {self.node}; its {receive.rec.verified} verified bytes are kept: "
                "a retry resumes from there",
            )
            raise TransferRefused(507, ErrorSlug.NO_SPACE, receive.rec.error or str(exc)) from None
        except FrameError as exc:
            self.metrics.refused("bad_frame")
            raise TransferRefused(400, ErrorSlug.BAD_FRAME, str(exc)) from None
        except TransferRefused as exc:
            if exc.error == ErrorSlug.BAD_OFFSET:
                self.metrics.refused("bad_offset")
            raise
        finally:
            await writer.close()
            session.streaming = False
            os.close(fd)
            if receive.rec.state == "receiving":
                with contextlib.suppress(OSError):
                    receive.save()

    # -- removal --------------------------------------------------------------------------

    def _drop(self, receive: Receive) -> None:
        if receive.forwarder is not None:
            receive.forwarder.cancel()
        receive.session = None
        receive.discard_data()
        receive.state_path.unlink(missing_ok=True)
        receive.manifest_path.unlink(missing_ok=True)
        self.receives.pop(receive.rec.task_uid, None)
        receive.rec.state = "failed"
        receive.rec.error = "removed"
        receive._advanced()

    def forget_copy(self, name: str) -> None:
        """A staged image goes (evicted): with its receive, if a peer's copy."""
        for receive in list(self.receives.values()):
            if receive.rec.name == name:
                self._drop(receive)
        self.staging.remove(name)

    def stop(self, task_id: int, task_uid: str) -> Receive | None:
        """End the task's session (its task was canceled): a running stream ends at its next
        frame (a newer session took over) and its relay stops, the verified bytes stay for a
        retry's session to resume from. None when there is no such receive."""
        receive = self.get(task_id, task_uid)
        if receive is None:
            return None
        if receive.forwarder is not None:
            receive.forwarder.cancel()
            receive.forwarder = None
            receive.forward_key = None
        receive.session = None
        rec = receive.rec
        if rec.state == "receiving":
            # The attempt's later sessions are refused as a failed copy's are: a ticket issued
            # just before the cancel (to route around a relay) started the copy again at once.
            # A retry is a newer attempt: it resumes from the verified bytes.
            rec.state, rec.error_kind = "failed", ErrorSlug.RECEIVE_FAILED
            rec.error = f"canceled; its {rec.verified} verified bytes are kept"
            with contextlib.suppress(OSError):
                receive.save()
            receive._advanced()
        log.info("task %s: session stopped, %s verified bytes kept", task_id, rec.verified)
        return receive

    def remove(self, task_id: int, task_uid: str | None = None) -> bool:
        """Drop the task's receive (without a uid: every receive of that task id)."""
        doomed = [
            r
            for r in self.receives.values()
            if r.rec.task_id == task_id and task_uid in (None, r.rec.task_uid)
        ]
        for receive in doomed:
            self._drop(receive)
            log.info("task %s: receive %s removed", task_id, receive.rec.task_uid)
        return bool(doomed)
