"""The broker: conflating subscriber queues, subscriptions, ordering, reloads."""

from __future__ import annotations

import attrs
import pytest
import trio
import trio.testing

from msgstore import EventType, ReloadRequired, iter_batches, open_broker


async def test_subscriber_receives_published_events_in_order() -> None:
    async with open_broker() as broker, broker.subscribe() as events:
        for i in range(5):
            broker.publish(EventType.UPDATED, i)
        got = [events.receive_nowait().payload for _ in range(5)]
    assert got == [0, 1, 2, 3, 4]


@attrs.frozen
class Item:
    id: str
    value: int


async def test_a_newer_event_of_an_item_replaces_its_queued_one_and_moves_back() -> None:
    async with open_broker() as broker, broker.subscribe() as events:
        broker.publish(EventType.UPDATED, Item("a", 1), seq=1)
        broker.publish(EventType.UPDATED, Item("b", 1), seq=2)
        broker.publish(EventType.UPDATED, Item("a", 2), seq=3)
        assert events.pending == 2
        got = [events.receive_nowait() for _ in range(2)]
        assert [(e.id, e.payload.value, e.seq) for e in got] == [("b", 1, 2), ("a", 2, 3)]
        assert broker.conflated == 1
        assert broker.drop_count == 0


@pytest.mark.parametrize(
    ("first", "then", "queued"),
    [
        (EventType.CREATED, EventType.UPDATED, EventType.CREATED),
        (EventType.CREATED, EventType.DELETED, EventType.DELETED),
        (EventType.UPDATED, EventType.DELETED, EventType.DELETED),
        (EventType.DELETED, EventType.CREATED, EventType.CREATED),
        (EventType.UPDATED, EventType.UPDATED, EventType.UPDATED),
    ],
)
async def test_coalescing_rules(first: EventType, then: EventType, queued: EventType) -> None:
    async with open_broker() as broker, broker.subscribe() as events:
        broker.publish(first, Item("a", 1))
        broker.publish(then, Item("a", 2))
        event = events.receive_nowait()
        assert (event.type, event.payload.value) == (queued, 2)


async def test_a_reader_that_never_reads_holds_one_event_per_item(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_broker() as broker, broker.subscribe() as events:
        for token in range(10_000):
            broker.publish(EventType.UPDATED, Item(f"m{token % 100}", token))
        assert events.pending == 100
        assert broker.peak_pending == 100
        assert broker.drop_count == 0


async def test_too_many_unread_items_empty_the_queue_and_raise_reload_required() -> None:
    async with open_broker(max_pending=3) as broker, broker.subscribe() as events:
        for i in range(4):
            broker.publish(EventType.UPDATED, Item(str(i), i), seq=i + 1)
        with pytest.raises(ReloadRequired) as raised:
            events.receive_nowait()
        assert raised.value.seq == 4
        assert broker.drop_count == 4
        assert broker.reloads == 1
        # The subscription goes on: later changes arrive.
        broker.publish(EventType.UPDATED, Item("x", 9), seq=5)
        assert events.receive_nowait().id == "x"


async def test_iter_batches_stops_a_batch_before_a_reload() -> None:
    async with open_broker(max_pending=1) as broker, broker.subscribe() as events:
        broker.publish(EventType.UPDATED, Item("a", 1))
        broker.publish(EventType.UPDATED, Item("b", 1))  # overflows
        batches = iter_batches(events)
        with pytest.raises(ReloadRequired):
            await anext(batches)
        broker.publish(EventType.UPDATED, Item("c", 1))
        assert [e.id for e in await anext(batches)] == ["c"]


async def test_leaving_the_broker_scope_ends_every_subscription() -> None:
    received = []
    async with trio.open_nursery() as nursery, open_broker() as broker:

        async def listen(task_status: trio.TaskStatus[None]) -> None:
            async with broker.subscribe() as events:
                task_status.started()
                async for event in events:
                    received.append(event.payload)

        await nursery.start(listen)
        await nursery.start(listen)
        assert broker.subscriber_count == 2
        broker.publish(EventType.CREATED, 1)
    # Both `async for` loops ended on their own once the broker closed.
    assert received == [1, 1]


async def test_leaving_a_subscription_unsubscribes() -> None:
    async with open_broker() as broker:
        async with broker.subscribe():
            assert broker.subscriber_count == 1
        assert broker.subscriber_count == 0
        broker.publish(EventType.UPDATED, "nobody")
        assert broker.drop_count == 0


async def test_broker_rejects_a_zero_bound() -> None:
    with pytest.raises(ValueError, match="max_pending"):
        async with open_broker(max_pending=0):
            pass


async def test_iter_batches_yields_each_burst_whole_and_in_order() -> None:
    async with open_broker() as broker, broker.subscribe() as events:
        for i in range(5):
            broker.publish(EventType.UPDATED, i)
        batches = iter_batches(events)
        assert [e.payload for e in await anext(batches)] == [0, 1, 2, 3, 4]
        broker.publish(EventType.UPDATED, 5)
        assert [e.payload for e in await anext(batches)] == [5]
