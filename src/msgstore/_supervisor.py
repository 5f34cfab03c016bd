"""One-for-one supervision, Erlang style, for the task of one actor.

An actor's task runs its body and, when it fails with an unexpected error (a bug:
not a storage error, which the actor retries itself), runs it again on the same actor
object, whose buffer is intact. More than ``max_restarts`` failures within
``within`` seconds of Trio time stop it for good. The supervisor lives in the actor's
own task, so a failure never reaches the service's nursery and the other actors never
notice.

``KeyboardInterrupt`` (and other ``BaseException``s that are not cancellation) are not
the actor's failure but the program's: the actor reports them (the service then
ends its block, writing every buffer on the way out, and raises the interrupt) and
keeps the actor running so that it can still write its own buffer.
"""

from __future__ import annotations

import attrs
import trio


@attrs.frozen
class RestartPolicy:
    """How often an actor may fail before it is stopped."""

    #: Restarts allowed within ``within`` seconds; one more failure stops the actor.
    max_restarts: int = attrs.field(default=3, validator=attrs.validators.ge(0))
    #: The sliding window, in seconds of Trio time.
    within: float = attrs.field(default=5.0, validator=attrs.validators.gt(0))


class Supervisor:
    """The restart bookkeeping of one actor: restart, or stop for good?

    The loop that runs the actor's body again lives in the actor's task
    (``MessageActor.serve``): a wrapper coroutine would cost every live actor one more
    frame, and they are what the store's memory per stream is made of.
    """

    __slots__ = ("_failures", "policy")

    def __init__(self, policy: RestartPolicy) -> None:
        self.policy = policy
        self._failures: list[float] = []  # Trio times of the failures within the window

    def may_restart(self) -> bool:
        """Record a failure now; whether the actor may run again (False: stop it)."""
        now = trio.current_time()
        window = self.policy.within
        self._failures = [t for t in self._failures if t > now - window]
        self._failures.append(now)
        return len(self._failures) <= self.policy.max_restarts

    @property
    def recent_failures(self) -> int:
        return len(self._failures)
