"""A message's mailbox: the one way callers reach its actor.

The service keeps one ``Mailbox`` per live message id. It holds the sending half of the
actor's Trio memory channel, and the letters that travel on it:

* ``StateBox``: the newest state ``update`` accepted. A box is *conflating*: until the
  actor opens it, a newer state replaces the one inside instead of sending another
  letter, so a window holds one state however many tokens arrived, and intermediate
  states are freed as soon as they are replaced. A token never wakes the actor: the
  first update of a window arms the mailbox's alarm for the window's deadline, and the
  alarm clock sends the box then.
* ``Request``: a caller that needs the actor now (a possibly terminal update, flush,
  delete, create). It carries the unsent box, if any, so the actor always acts on the
  newest state, and a ``Reply`` the caller waits on.
* ``TICK``: the alarm the actor itself asked for (a retry's backoff, retirement).

The channel is bounded (``LETTERS`` letters). Its overflow policy: state never waits,
because at most one box is ever unopened and a box that finds the channel full stays
in the mailbox (the alarm tries again a moment later, and any request takes it along);
a request that finds the channel full waits for room, which only happens with more than
``LETTERS`` callers waiting on one message at once, and is back-pressure on callers
that wait for the actor anyway.
"""

from __future__ import annotations

import enum
import math
from typing import Any, Final

import trio

from ._alarm_clock import Alarm, AlarmClock
from ._content import Message, Part
from ._reply import Reply
from ._structure import Structure

#: The capacity of an actor's channel (see the module docstring).
LETTERS: Final = 64
# How soon the alarm tries again to send a box that found the channel full.
_FULL_RETRY = 0.001


class StateBox:
    """The newest accepted state of one window, replaced in place until opened."""

    __slots__ = ("deadline", "opened", "parts", "sent", "since", "structure")

    def __init__(
        self, parts: list[Part], structure: Structure, deadline: float, since: float
    ) -> None:
        self.since = since  # when its first state was accepted
        self.parts = parts
        self.structure = structure
        self.deadline = deadline  # when the window ends: written by then
        self.sent = False  # a letter (or inside a request's) in the actor's channel
        self.opened = False  # taken by the actor: later states need a new box


class RequestKind(enum.Enum):
    #: Write the state now if it is terminal against the last written state.
    WRITE_IF_TERMINAL = "write if terminal"
    #: Write this update's state now (``debounce <= 0``); MessageNotFound if deleted.
    WRITE = "write"
    #: Write whatever is unwritten now (``flush``); nothing to do if deleted.
    FLUSH = "flush"
    DELETE = "delete"
    CREATE = "create"


class Request:
    """A caller waiting on the actor."""

    __slots__ = ("box", "kind", "payload", "reply")

    def __init__(
        self, kind: RequestKind, reply: Reply[Any], box: StateBox | None, payload: Any
    ) -> None:
        self.kind = kind
        self.reply = reply
        self.box = box
        self.payload = payload


class _Tick:
    __slots__ = ()

    def __repr__(self) -> str:
        return "TICK"


TICK: Final = _Tick()

Letter = StateBox | Request | _Tick


class ActorGone(Exception):
    """Internal: the actor behind a mailbox has ended (the service starts a new one)."""


class Mailbox:
    """Callers' side of one message's actor; see the module docstring.

    Only the service's callers post and request here; the actor reads its channel's
    other end, and tells the mailbox when it wants a ``TICK`` and when it has gone.
    """

    __slots__ = (
        "_box",
        "_clock",
        "_debounce",
        "_send",
        "_tick_at",
        "_window_end",
        "alarm",
        "base",
        "closed_by",
        "deleted",
        "id",
        "latest",
        "latest_structure",
        "unconfirmed",
        "unwritten",
        "unwritten_since",
    )

    def __init__(
        self,
        base: Message,
        parts: list[Part],
        structure: Structure,
        send: trio.MemorySendChannel[Letter],
        clock: AlarmClock,
        debounce: float,
    ) -> None:
        self.id = base.id
        #: The message's other fields (its parts are ``latest``); never mutated.
        self.base = base
        #: The newest accepted parts, for reads (a private list nothing mutates).
        self.latest = parts
        #: Their structure: a caller asks the actor for a terminal write only when it
        #: changed (the actor decides against what it last wrote).
        self.latest_structure = structure
        #: A terminal request failed or was cancelled: ask the actor on every update
        #: until one succeeds.
        self.unconfirmed = False
        #: Set by the actor: whether it holds state it has not written.
        self.unwritten = False
        #: When the oldest state not yet in the file was accepted (inf: none).
        self.unwritten_since = math.inf
        #: Set by the actor when it deleted the row: reads go to the file.
        self.deleted = False
        #: Set by the actor when it ended for a reason callers must hear (None: retired).
        self.closed_by: BaseException | None = None
        self.alarm: Alarm | None = None
        self._send = send
        self._clock = clock
        self._debounce = debounce
        self._box: StateBox | None = None
        self._tick_at = math.inf
        self._window_end = math.inf

    def message(self) -> Message:
        """The newest accepted state, as a message of its own."""
        return self.base.with_parts(list(self.latest))

    @property
    def holds_unwritten(self) -> bool:
        """Whether some accepted state is not in the file yet (for statistics)."""
        box = self._box
        return self.unwritten or (box is not None and not box.opened)

    @property
    def has_unsent_state(self) -> bool:
        """A state the actor has not received yet (not even as a letter)."""
        box = self._box
        return box is not None and not box.opened and not box.sent

    # -- callers -----------------------------------------------------------------------

    def post(self, parts: list[Part], structure: Structure, *, arm: bool = True) -> None:
        """Hand over a new state without waking the actor (it is written by the end of
        its window, or with the next request). ``arm=False``: a request follows at
        once and carries it, so the alarm is not set."""
        self.latest = parts
        self.latest_structure = structure
        box = self._box
        if box is not None and not box.opened:
            box.parts = parts
            box.structure = structure
            return
        now = trio.current_time()
        if self.unwritten:
            # The actor already holds unwritten state (its window is open): this box
            # belongs to the same window and is due at the same time.
            deadline = self._window_end
        else:
            deadline = self._window_end = now + self._debounce
        if self.unwritten_since == math.inf:
            self.unwritten_since = now
        self._box = StateBox(parts, structure, deadline, now)
        if arm:
            self._clock.set_alarm(self, deadline)

    async def request(self, kind: RequestKind, payload: Any = None) -> Any:
        """Send a request (with the unsent state) and wait for the actor's answer.

        Cancelled before the actor acted on it: the request is withdrawn and
        ``Cancelled`` raised; the state stays with the actor for its window.
        Raises ``ActorGone`` when the actor has ended without a reason to give.
        """
        reply = self.send_request(kind, payload)
        if reply is None:
            reply = Reply()
            letter = Request(kind, reply, self._take_box(), payload)
            try:
                await self._send.send(letter)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                self._gone()
            except BaseException:
                # Cancelled while waiting for room: the box never left; the alarm
                # delivers it at its deadline as if no request had been made.
                self._put_back(letter.box)
                raise
        return await reply.wait()

    def send_request(self, kind: RequestKind, payload: Any = None) -> Reply[Any] | None:
        """Send a request if the channel has room; the reply to wait on, or None when
        full (then use ``request``). Raises ``ActorGone`` as ``request`` does."""
        reply: Reply[Any] = Reply()
        letter = Request(kind, reply, self._take_box(), payload)
        try:
            self._send.send_nowait(letter)
        except trio.WouldBlock:
            self._put_back(letter.box)
            return None
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self._gone()
        return reply

    def _take_box(self) -> StateBox | None:
        """The box for a request to carry: one the actor will not get otherwise."""
        box = self._box
        if box is None or box.opened or box.sent:
            return None  # none, or already in the channel ahead of the request
        box.sent = True
        return box

    def _put_back(self, box: StateBox | None) -> None:
        if box is not None and not box.opened:
            box.sent = False
            self._clock.set_alarm(self, box.deadline)

    def _gone(self) -> None:
        if self.closed_by is not None:
            raise self.closed_by
        raise ActorGone(self.id)

    # -- the alarm clock ---------------------------------------------------------------

    def on_alarm(self) -> None:
        """The window's deadline (send the box) or the actor's own alarm (a TICK)."""
        now = trio.current_time()
        next_at = math.inf
        box = self._box
        if box is not None and not box.opened and not box.sent:
            if box.deadline > now:
                next_at = box.deadline
            else:
                # Sent, the box stays the mailbox's until the actor opens it: tokens
                # that arrive meanwhile still go into it.
                box.sent = self._deliver(box)
                if not box.sent:
                    next_at = now + _FULL_RETRY  # the channel is full: try again soon
        if self._tick_at <= now:
            self._tick_at = math.inf if self._deliver(TICK) else now + _FULL_RETRY
        next_at = min(next_at, self._tick_at)
        if next_at < math.inf:
            self._clock.set_alarm(self, next_at)

    def _deliver(self, letter: Letter) -> bool:
        try:
            self._send.send_nowait(letter)
        except trio.WouldBlock:
            return False
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # the actor has ended; nothing is waiting for this letter
        return True

    # -- the actor ---------------------------------------------------------------------

    def written(self) -> None:
        """The actor wrote what it held: only a box it has not opened is unwritten."""
        box = self._box
        pending = box is not None and not box.opened and not box.sent
        self.unwritten = pending
        self.unwritten_since = box.since if box is not None and not box.opened else math.inf

    def window_moved(self, deadline: float) -> None:
        """The actor's unwritten state is now due at ``deadline`` (a retry's backoff):
        later states join it then, instead of each waking the actor at once."""
        self._window_end = deadline

    def wake_actor_at(self, when: float) -> None:
        """Send the actor a ``TICK`` at ``when`` (the earliest time asked for wins)."""
        if when < self._tick_at:
            self._tick_at = when
            self._clock.set_alarm(self, when)

    def opened(self, box: StateBox) -> None:
        """The actor has taken ``box``: the next state needs a new one (and the old one
        is freed now, not when that comes)."""
        if self._box is box:
            self._box = None

    def take_unsent_state(self) -> StateBox | None:
        """The newest box, sent or not (the actor's last words at shutdown)."""
        box = self._box
        return None if box is None or box.opened else box

    def close(self) -> None:
        """The actor has ended: no more letters, no more alarms."""
        self._clock.cancel_alarm(self)
        self._send.close()
