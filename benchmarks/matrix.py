"""The cases: the standard matrix of issue #4, and a smaller one for ``--quick``."""

from __future__ import annotations

from dataclasses import dataclass

from .workload import Config


@dataclass(frozen=True)
class Case:
    number: int
    title: str
    config: Config
    wal: bool = False  # also measure WAL bytes per token
    memory: bool = False  # also measure RSS after all finish and idle actors retire
    #: The rows this case runs (None: all). The long replies run msgstore and Go only:
    #: the write-every-update rows would rewrite a 20,000-token row per token.
    rows: tuple[str, ...] | None = None


STANDARD: dict[int, Case] = {
    c.number: c
    for c in (
        Case(
            1,
            "25 streams x 200 tokens @5 ms, R=50, T=2, K=2 (paced)",
            Config(25, 200, 0.005, 0.033, subscribers=2, tool_calls=2, reasoning=50),
        ),
        Case(
            2,
            "1,000 streams x 100 tokens @100 ms, R=0, T=1, K=1 (many slow streams)",
            Config(1000, 100, 0.1, 0.033, subscribers=1, tool_calls=1),
        ),
        Case(3, "100 streams x 500 tokens @0 (flat out)", Config(100, 500, 0.0, 0.033)),
        Case(
            4,
            "1 stream x 20,000 tokens @0 (one long reply)",
            Config(1, 20_000, 0.0, 0.033),
            wal=True,
        ),
        Case(
            5,
            "10,000 streams x 20 tokens @1 s, K=1 (memory)",
            Config(10_000, 20, 1.0, 0.033),
            memory=True,
        ),
        # Issue #11: a busy server's subscriber, reading with plain `async for`.
        Case(
            6,
            "5,000 streams x 50 tokens @20 ms, K=1 (a busy server's subscriber)",
            Config(5_000, 50, 0.02, 0.033),
            rows=("a", "d"),
        ),
        # Issue #12: long paced replies; WAL bytes, and their growth with the length.
        Case(
            7,
            "1 stream x 20,000 tokens @5 ms (a long paced reply)",
            Config(1, 20_000, 0.005, 0.033),
            wal=True,
            rows=("a", "d"),
        ),
        Case(
            8,
            "25 streams x 20,000 tokens @5 ms (long replies at once)",
            Config(25, 20_000, 0.005, 0.033),
            wal=True,
            rows=("a", "d"),
        ),
        Case(
            9,
            "1 stream x 5,000 tokens @5 ms (bytes/token at 5,000)",
            Config(1, 5_000, 0.005, 0.033),
            wal=True,
            rows=("a", "d"),
        ),
        Case(
            10,
            "1 stream x 40,000 tokens @5 ms (bytes/token at 40,000)",
            Config(1, 40_000, 0.005, 0.033),
            wal=True,
            rows=("a", "d"),
        ),
    )
}
#: Not in a plain `python -m benchmarks` run (they take about 20 minutes): `--case 6-10`
#: or `--long` runs them.
LONG = frozenset({6, 7, 8, 9, 10})

_AD = ("a", "d")

# Same shapes, a few seconds each: for CI-like runs and for trying a change quickly.
QUICK: dict[int, Case] = {
    c.number: c
    for c in (
        Case(
            1,
            "quick: 10 x 100 @5 ms, R=20, T=2, K=2",
            Config(10, 100, 0.005, 0.033, subscribers=2, tool_calls=2, reasoning=20),
        ),
        Case(
            2,
            "quick: 200 x 20 @100 ms, T=1, K=1",
            Config(200, 20, 0.1, 0.033, subscribers=1, tool_calls=1),
        ),
        Case(3, "quick: 50 x 200 @0", Config(50, 200, 0.0, 0.033)),
        Case(4, "quick: 1 x 5,000 @0", Config(1, 5_000, 0.0, 0.033), wal=True),
        Case(5, "quick: 2,000 x 5 @1 s, K=1", Config(2_000, 5, 1.0, 0.033), memory=True),
        Case(6, "quick: 1,000 x 20 @20 ms, K=1", Config(1_000, 20, 0.02, 0.033), rows=("a", "d")),
        Case(
            7, "quick: 1 x 2,000 @5 ms", Config(1, 2_000, 0.005, 0.033), wal=True, rows=("a", "d")
        ),
        Case(
            8, "quick: 5 x 2,000 @5 ms", Config(5, 2_000, 0.005, 0.033), wal=True, rows=("a", "d")
        ),
        Case(9, "quick: 1 x 500 @5 ms", Config(1, 500, 0.005, 0.033), wal=True, rows=("a", "d")),
        Case(
            10, "quick: 1 x 4,000 @5 ms", Config(1, 4_000, 0.005, 0.033), wal=True, rows=("a", "d")
        ),
    )
}
