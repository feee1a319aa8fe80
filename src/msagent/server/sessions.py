"""Interactive sessions: one state per session (prompts + previous logits), never one per tool.

A session holds the image's :class:`msagent.Embedding` (from the shared cache), the prompt
mode and a history of states; each executed prompt pushes a state, ``undo`` pops one,
``reset`` clears them. Operations on one session are serialized by its lock; different
sessions run concurrently. The store bounds the number of sessions and expires idle ones.
"""

from __future__ import annotations

import asyncio
import re
import threading
import time
from collections.abc import Callable
from typing import Any

import attrs

from msagent._lru import BoundedLRU
from msagent.agent import episode
from msagent.agent.episode import PROMPT_MODES, EpisodeState
from msagent.backbones.segmenter import Embedding
from msagent.errors import InvalidInput
from msagent.server.errors import Conflict, SessionNotFound, TooManySessions

MAX_HISTORY = 64  # undo depth; older states are dropped
MAX_EXPIRED_IDS = 10_000  # expired session ids remembered, to say they expired
SESSION_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


@attrs.define(eq=False)
class Session:
    """One interactive segmentation of one image.

    ``prompt_mode``: "accumulate" decodes the box and every click so far with the previous
    logits (SAM's protocol); "latest" only the newest prompt with the previous logits
    (upstream MedSAM-Agent's server). ``multimask``: None for the backbone's default. Its
    states are :class:`msagent.agent.episode.EpisodeState` values: the episode core's rule.
    """

    id: str
    image_id: str
    embedding: Embedding
    prompt_mode: str = attrs.field(default="accumulate", validator=attrs.validators.in_(PROMPT_MODES))
    multimask: bool | None = None
    text: str | None = None  # the target, sent with every decode to text-prompted backbones
    created_at: float = attrs.field(factory=time.time)
    last_used: float = 0.0
    history: list[EpisodeState] = attrs.field(factory=list)
    initial: EpisodeState | None = None  # the state of an initial mask to refine (undo's floor)
    proposal: dict[str, Any] | None = None  # what the backbone proposed, when it started from that
    actions: int = 0  # prompts ever executed (upstream's round number)
    lock: asyncio.Lock = attrs.field(factory=asyncio.Lock)

    @property
    def image_size(self) -> tuple[int, int]:
        return self.embedding.image_size

    @property
    def state(self) -> EpisodeState:
        """The state in force (before the first prompt: the initial mask's, or a fresh one)."""
        if self.history:
            return self.history[-1]
        if self.initial is not None:
            return self.initial
        return episode.start(self.embedding, prompt_mode=self.prompt_mode, text=self.text)

    def push(self, state: EpisodeState) -> None:
        self.history.append(state)
        self.actions += 1
        del self.history[:-MAX_HISTORY]

    def undo(self) -> EpisodeState:
        if not self.history:
            raise Conflict(f"session {self.id!r} has nothing to undo; add a box or a point first")
        return self.history.pop()

    def reset(self) -> None:
        """Forget every prompt (back to the initial mask, if the session has one)."""
        self.history.clear()


class SessionStore:
    """Live sessions by id, at most ``max_sessions``; idle ones expire after ``idle_timeout_s``."""

    def __init__(self, max_sessions: int, idle_timeout_s: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.max_sessions = max_sessions
        self.idle_timeout_s = idle_timeout_s
        self.clock = clock
        self._sessions: dict[str, Session] = {}
        # recently expired ids, to say "expired" (first in, first out)
        self._expired: BoundedLRU[str, bool] = BoundedLRU(MAX_EXPIRED_IDS)
        self._lock = threading.Lock()
        self.created = self.deleted = self.expired = 0

    def __len__(self) -> int:
        return len(self._sessions)

    def check_room(self, session_id: str | None, *, replace: bool = False) -> None:
        """Raise before an expensive encode if ``add`` would fail."""
        if session_id is not None:
            check_session_id(session_id)
        self.expire()
        with self._lock:
            self._check_room(session_id, replace)

    def _check_room(self, session_id: str | None, replace: bool) -> None:
        if session_id in self._sessions and not replace:
            raise Conflict(f"session {session_id!r} already exists; delete it or pick another id")
        if len(self._sessions) >= self.max_sessions and session_id not in self._sessions:
            raise TooManySessions(
                f"the server holds its maximum of {self.max_sessions} sessions; delete finished "
                "sessions (DELETE /v1/sessions/{id}) or start it with a higher --max-sessions")

    def add(self, session: Session, *, replace: bool = False) -> Session:
        check_session_id(session.id)
        with self._lock:
            self._check_room(session.id, replace)
            session.last_used = self.clock()
            self._sessions[session.id] = session
            self._expired.pop(session.id, None)
            self.created += 1
        return session

    def get(self, session_id: str) -> Session:
        """The session, marked as used now; raises SessionNotFound (saying if it expired)."""
        now = self.clock()
        with self._lock:
            session = self._sessions.get(session_id)
            if session is not None and now - session.last_used > self.idle_timeout_s:
                self._drop_expired(session_id)
                session = None
            if session is None:
                raise SessionNotFound(self._missing_message(session_id))
            session.last_used = now
            return session

    def delete(self, session_id: str) -> Session:
        with self._lock:
            session = self._sessions.pop(session_id, None)
            if session is None:
                raise SessionNotFound(self._missing_message(session_id))
            self.deleted += 1
            return session

    def list(self) -> list[Session]:
        self.expire()
        with self._lock:
            return list(self._sessions.values())

    def expire(self) -> int:
        """Delete sessions idle longer than the timeout; returns how many."""
        now = self.clock()
        with self._lock:
            stale = [sid for sid, s in self._sessions.items()
                     if now - s.last_used > self.idle_timeout_s]
            for sid in stale:
                self._drop_expired(sid)
        return len(stale)

    def idle_seconds(self, session: Session) -> float:
        return max(0.0, self.clock() - session.last_used)

    def _drop_expired(self, session_id: str) -> None:
        del self._sessions[session_id]
        self.expired += 1
        self._expired.put(session_id, True)

    def _missing_message(self, session_id: str) -> str:
        if session_id in self._expired:
            return (f"session {session_id!r} expired after {self.idle_timeout_s:g} s without "
                    "requests; create a new one")
        return f"no session {session_id!r}; create one with POST /v1/sessions"


def check_session_id(session_id: str) -> None:
    if not isinstance(session_id, str) or not SESSION_ID.match(session_id):
        raise InvalidInput(f"session id {session_id!r} must be 1-128 characters of letters, "
                           "digits, '.', '_', ':' or '-'")
