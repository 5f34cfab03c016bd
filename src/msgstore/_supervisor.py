"""One-for-one supervision, Erlang style, for the task of one actor.

``supervise`` runs an actor's body and, when it fails with an unexpected error (a
bug: not a storage error, which the actor retries itself), runs it again on the same
actor object, whose buffer is intact. More than ``max_restarts`` failures within
``within`` seconds of Trio time stop it for good. The supervisor lives in the actor's
own task, so a failure never reaches the service's nursery and the other actors never
notice.

``KeyboardInterrupt`` (and other ``BaseException``s that are not cancellation) are not
the actor's failure but the program's: the supervisor reports them (the service then
ends its block, writing every buffer on the way out, and raises the interrupt) and
keeps the actor running so that it can still write its own buffer.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import attrs
import trio


@attrs.frozen
class RestartPolicy:
    """How often an actor may fail before it is stopped."""

    #: Restarts allowed within ``within`` seconds; one more failure stops the actor.
    max_restarts: int = attrs.field(default=3, validator=attrs.validators.ge(0))
    #: The sliding window, in seconds of Trio time.
    within: float = attrs.field(default=5.0, validator=attrs.validators.gt(0))


async def supervise(
    body: Callable[[], Awaitable[None]],
    policy: RestartPolicy,
    *,
    restarted: Callable[[Exception, int], None],
    stopped: Callable[[Exception], None],
    interrupted: Callable[[BaseException], None],
) -> None:
    """Run ``body`` until it returns, restarting it after failures (see the module).

    ``restarted(error, n)`` is called before the n-th restart within the window,
    ``stopped(error)`` when the actor is given up on (then this returns), and
    ``interrupted(exc)`` for a ``KeyboardInterrupt`` or the like (then the body runs
    again). ``Cancelled`` goes straight through.
    """
    failures: list[float] = []
    while True:
        try:
            await body()
            return
        except trio.Cancelled:
            raise
        except Exception as error:
            now = trio.current_time()
            failures = [t for t in failures if t > now - policy.within]
            failures.append(now)
            if len(failures) > policy.max_restarts:
                stopped(error)
                return
            restarted(error, len(failures))
        except BaseException as exc:
            interrupted(exc)
        # A checkpoint between lives: a body that fails at once must not spin the loop.
        await trio.lowlevel.checkpoint()
