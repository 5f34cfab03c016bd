"""Token usage as the adapters report it, and adding it to a session."""

from __future__ import annotations

import attrs

from msgstore import MessageService, Session, SessionService


@attrs.frozen
class Usage:
    """What one model call used, in tokens, as the provider reported it.

    ``input_tokens`` counts every prompt token, cached ones included (Anthropic reports
    cache reads and writes apart from ``input_tokens``; they are added in here), so it
    is the prompt's size whichever provider said it. ``cache_read_tokens``,
    ``cache_write_tokens`` and ``reasoning_tokens`` are parts of those totals, 0 when
    the provider did not say.
    """

    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0


def count(report: object, *path: str) -> int:
    """The token count at ``path`` in a provider's usage report, 0 when it is not there.

    Read field by field because the SDKs' usage types gain fields over versions, and
    a field an older SDK does not know arrives as a plain dict (or not at all).
    """
    value: object = report
    for name in path:
        if value is None:
            return 0
        value = value.get(name) if isinstance(value, dict) else getattr(value, name, None)
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


@attrs.frozen
class Prices:
    """Dollars per million tokens, for a session's ``cost``.

    Cache reads and writes cost ``input`` unless their own price is given (Anthropic
    and OpenAI both charge them differently, and differently per model).
    """

    input: float
    output: float
    cache_read: float | None = None
    cache_write: float | None = None

    def cost(self, usage: Usage) -> float:
        """What ``usage`` cost at these prices, in dollars."""
        cache_read = self.input if self.cache_read is None else self.cache_read
        cache_write = self.input if self.cache_write is None else self.cache_write
        uncached = max(usage.input_tokens - usage.cache_read_tokens - usage.cache_write_tokens, 0)
        dollars_per_million = (
            uncached * self.input
            + usage.cache_read_tokens * cache_read
            + usage.cache_write_tokens * cache_write
            + usage.output_tokens * self.output
        )
        return dollars_per_million / 1_000_000


async def add_usage_to_session(
    service: MessageService | SessionService,
    session_id: str,
    usage: Usage | None,
    *,
    prices: Prices | None = None,
) -> Session:
    """Add a call's tokens (and, with ``prices``, its cost) to the session; return it.

    ``usage`` None (the stream reported none) adds nothing. One statement adds to what
    the row holds (``SessionService.add_usage``), so concurrent turns never lose one.
    """
    sessions = service.sessions if isinstance(service, MessageService) else service
    if usage is None:
        return await sessions.get(session_id)
    return await sessions.add_usage(
        session_id,
        prompt_tokens=usage.input_tokens,
        completion_tokens=usage.output_tokens,
        cost=0.0 if prices is None else prices.cost(usage),
    )
