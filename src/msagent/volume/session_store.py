"""Live volume sessions (:class:`msagent.volume.session.VolumeSession`) by id, with their
owners' quotas.

Each session belongs to an ``owner`` (the caller's client identity); at most ``max_items``
sessions live in all and ``per_owner`` per owner. A new session past its owner's quota closes
that owner's least recently used idle session; past the total it is refused
(:class:`TooManyVolumeSessions`): one client never closes another's session. Sessions idle
longer than ``idle_timeout_s`` are closed (never one that is running an operation); an owner
creates at most ``creations_per_minute`` sessions a minute; at most ``max_propagations``
propagations run at once (:class:`TooManyPropagations` past it). A dropped session (deleted,
evicted, expired) stops its running propagation at once and is closed once its running
operation ends. What each session holds is bounded by the session itself
(:mod:`msagent.volume.session`).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from msagent._lru import BoundedLRU
from msagent.errors import InvalidInput
from msagent.volume.session import VolumeSession, VolumeSessionError, VolumeSessionNotFound

MAX_VOLUME_SESSIONS = 4
MAX_GONE = 10_000  # dropped session ids remembered, to say why they are gone


class TooManyVolumeSessions(VolumeSessionError):
    """No room for another session: the total is reached with other owners' sessions, every
    session of this owner is busy, or this owner creates sessions too fast."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class TooManyPropagations(VolumeSessionError):
    """As many propagations as allowed are running; try again when one ends."""


class VolumeSessionStore:
    """Live volume sessions by id, with their owners' quotas (see the module docstring). A
    dropped session (deleted, evicted, expired) stops its running propagation at once and is
    closed once its running operation (if any) ends.

    ``clock`` is :func:`time.monotonic` (tests pass their own)."""

    def __init__(self, max_items: int = MAX_VOLUME_SESSIONS, *, per_owner: int | None = None,
                 idle_timeout_s: float = 3600.0, max_propagations: int = 1,
                 creations_per_minute: float = 12.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if max_items < 1 or max_propagations < 1:
            raise InvalidInput("a volume-session store holds at least 1 session and runs at least "
                               "1 propagation")
        self.max_items = max_items
        self.per_owner = max_items if per_owner is None else max(1, min(per_owner, max_items))
        self.idle_timeout_s, self.max_propagations = idle_timeout_s, max_propagations
        self.creations_per_minute, self.clock = creations_per_minute, clock
        self._items: dict[str, VolumeSession] = {}
        self._creations: dict[str, list[float]] = {}  # owner → recent creation times
        self._propagating = 0
        self._lock = threading.Lock()
        self._closing: set[asyncio.Task] = set()
        self.created = self.deleted = self.evicted = self.expired = 0
        # recently dropped id → why (for a clear 404); first in, first out
        self._gone: BoundedLRU[str, str] = BoundedLRU(MAX_GONE)

    def __len__(self) -> int:
        return len(self._items)

    def sessions(self) -> list[VolumeSession]:
        with self._lock:
            return list(self._items.values())

    @property
    def propagating(self) -> int:
        return self._propagating

    # -- creation ------------------------------------------------------------------------
    def check_room(self, owner: str = "") -> None:
        """Raise :class:`TooManyVolumeSessions` before the work of making a session if
        :meth:`put` would refuse it (and count the attempt against the owner's rate)."""
        self.expire()
        now = self.clock()
        with self._lock:
            recent = [t for t in self._creations.get(owner, []) if now - t < 60.0]
            if len(recent) >= self.creations_per_minute:
                retry = max(1.0, 60.0 - (now - recent[0]))
                raise TooManyVolumeSessions(
                    f"too many new volume sessions: at most {self.creations_per_minute:g} a "
                    f"minute per client; retry in {retry:.0f} s (or keep using a session: its "
                    "prompts and propagations are not limited this way)", retry_after=retry)
            recent.append(now)
            self._creations[owner] = recent
            self._room_for(owner, evict=False)

    def put(self, session: VolumeSession) -> None:
        """Add ``session`` for its owner; past the owner's quota, that owner's least recently
        used idle session is closed for it; refused past the total (other owners' sessions are
        never closed for it)."""
        self.expire()
        with self._lock:
            for dropped in self._room_for(session.owner, evict=True):
                self._drop(dropped, "evicted", closed_for="a newer session of the same client")
            session.last_used = self.clock()
            self._items[session.id] = session
            self.created += 1

    def _room_for(self, owner: str, *, evict: bool) -> list[VolumeSession]:
        """Sessions of ``owner`` to close so one more fits (raises if none can); lock held."""
        mine = sorted((s for s in self._items.values() if s.owner == owner),
                      key=lambda s: s.last_used)
        idle = [s for s in mine if not _busy(s)]
        over_quota = len(mine) + 1 - self.per_owner
        over_total = len(self._items) + 1 - self.max_items
        need = max(over_quota, over_total, 0)
        if need > len(idle):
            if over_total > 0 and over_quota <= 0:
                raise TooManyVolumeSessions(
                    f"the server holds its maximum of {self.max_items} volume sessions, none of "
                    "them yours to close; retry later (idle sessions close after the idle "
                    "timeout), or ask the operator for a higher --max-volume-sessions",
                    retry_after=min(self.idle_timeout_s, 60.0))
            raise TooManyVolumeSessions(
                f"you hold {len(mine)} volume sessions (at most {self.per_owner} per client) and "
                "they are all busy; wait for one to finish or delete one "
                "(DELETE /v1/volumes/{id}/sessions/{sid})", retry_after=5.0)
        return idle[:need] if evict else []

    # -- lookups ---------------------------------------------------------------------------
    def get(self, volume_id: str, session_id: str) -> VolumeSession:
        """The session, marked used now; :class:`VolumeSessionNotFound` (saying why) if it is
        gone or idle past the timeout."""
        now = self.clock()
        with self._lock:
            session = self._items.get(session_id)
            if session is not None and not _busy(session) \
                    and now - session.last_used > self.idle_timeout_s:
                self._drop(session, "expired")
                session = None
            if session is None or session.volume_id != volume_id or session.closed:
                raise VolumeSessionNotFound(self._missing(volume_id, session_id))
            session.last_used = now
            return session

    def delete(self, volume_id: str, session_id: str) -> None:
        """Drop the session: a running propagation stops at its next slice."""
        session = self.get(volume_id, session_id)
        with self._lock:
            if self._items.get(session_id) is session:
                self._drop(session, "deleted")

    def expire(self) -> int:
        """Close sessions idle longer than the timeout (not one running an operation)."""
        now = self.clock()
        with self._lock:
            stale = [s for s in self._items.values()
                     if not _busy(s) and now - s.last_used > self.idle_timeout_s]
            for session in stale:
                self._drop(session, "expired")
        return len(stale)

    def held(self) -> list[Any]:
        """The ``source`` of every live session (what they keep in memory: stored volumes)."""
        with self._lock:
            return [s.source for s in self._items.values() if s.source is not None]

    # -- running operations ------------------------------------------------------------------
    @contextlib.asynccontextmanager
    async def using(self, session: VolumeSession) -> AsyncIterator[VolumeSession]:
        """Hold ``session``'s lock for an operation; a session dropped before or during it is
        not found (:meth:`VolumeSession.check_live`), so a result it lost is never reported."""
        async with session.lock:
            session.check_live()
            try:
                yield session
            finally:
                session.last_used = self.clock()
            session.check_live()

    @contextlib.contextmanager
    def propagation_slot(self) -> Any:
        """Count a running propagation; :class:`TooManyPropagations` past the bound."""
        with self._lock:
            if self._propagating >= self.max_propagations:
                raise TooManyPropagations(
                    f"{self._propagating} propagation(s) running, the most this server runs at "
                    "once; retry when one ends (or ask the operator for a higher "
                    "--max-propagations)")
            self._propagating += 1
        try:
            yield
        finally:
            with self._lock:
                self._propagating -= 1

    # -- closing -----------------------------------------------------------------------------
    def _drop(self, session: VolumeSession, reason: str, closed_for: str = "") -> None:
        """Remove ``session`` (lock held), stop its propagation, close it after its operation."""
        self._items.pop(session.id, None)
        session.drop(reason if not closed_for else f"{reason} for {closed_for}")
        counter = {"deleted": "deleted", "evicted": "evicted", "expired": "expired"}.get(reason)
        if counter:
            setattr(self, counter, getattr(self, counter) + 1)
        self._gone.put(session.id, session.dropped or reason)
        self._close_later(session)

    def _missing(self, volume_id: str, session_id: str) -> str:
        why = self._gone.peek(session_id)
        if why is not None:
            return f"volume session {session_id!r} was {why}; start a new one"
        return (f"no volume session {session_id!r} on volume {volume_id!r} (never made, or "
                "closed); start a new one")

    def _close_later(self, session: VolumeSession) -> None:
        async def close() -> None:
            async with session.lock:
                await asyncio.to_thread(session.close)

        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no event loop (a synchronous caller): nothing can be running
            session.close()
            return
        task = loop.create_task(close())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def close_all(self, wait_s: float = 10.0) -> None:
        """Drop and close every session (shutdown): running propagations stop at their next
        slice; a session still busy after ``wait_s`` is closed anyway (its spill folder goes)."""
        with self._lock:
            sessions = list(self._items.values())
            for session in sessions:
                self._drop(session, "closed")
        pending = list(self._closing)
        if pending:
            await asyncio.wait(pending, timeout=wait_s)
        for session in sessions:
            session.close()


def _busy(session: VolumeSession) -> bool:
    return session.lock.locked() or session.running
