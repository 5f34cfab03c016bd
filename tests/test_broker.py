"""The broker: lossy and must-deliver publishing, subscriptions, ordering."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from msgstore import EventType, iter_batches, open_broker


async def test_subscriber_receives_published_events_in_order() -> None:
    async with open_broker() as broker, broker.subscribe() as events:
        for i in range(5):
            broker.publish(EventType.UPDATED, i)
        got = [events.receive_nowait().payload for _ in range(5)]
    assert got == [0, 1, 2, 3, 4]


async def test_lossy_publish_to_full_subscriber_drops_and_counts() -> None:
    async with open_broker(buffer_size=1) as broker, broker.subscribe() as events:
        broker.publish(EventType.UPDATED, "a")
        broker.publish(EventType.UPDATED, "b")
        assert broker.drop_count == 1
        assert broker.must_deliver_drop_count == 0
        assert events.receive_nowait().payload == "a"


async def test_must_deliver_waits_for_room(autojump_clock: trio.testing.MockClock) -> None:
    async with open_broker(buffer_size=1, must_deliver_timeout=1.0) as broker:
        async with broker.subscribe() as events, trio.open_nursery() as nursery:
            broker.publish(EventType.UPDATED, "first")

            async def drain_later() -> None:
                await trio.sleep(0.5)
                assert (await events.receive()).payload == "first"

            nursery.start_soon(drain_later)
            await broker.publish_must_deliver(EventType.UPDATED, "terminal")
            assert trio.current_time() == pytest.approx(0.5)
            assert (await events.receive()).payload == "terminal"
        assert broker.must_deliver_drop_count == 0


async def test_must_deliver_drops_after_one_shared_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with (
        open_broker(buffer_size=1, must_deliver_timeout=0.05) as broker,
        broker.subscribe() as a,
        broker.subscribe() as b,
        broker.subscribe() as c,
    ):
        broker.publish(EventType.UPDATED, "fill")
        start = trio.current_time()
        await broker.publish_must_deliver(EventType.UPDATED, "terminal")
        # Three full subscribers, but the wait is bounded by one timeout in all.
        assert trio.current_time() - start == pytest.approx(0.05)
        assert broker.must_deliver_drop_count == 3
        assert broker.drop_count == 0
        for events in (a, b, c):
            assert events.receive_nowait().payload == "fill"


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


async def test_broker_rejects_a_zero_buffer() -> None:
    with pytest.raises(ValueError, match="buffer_size"):
        async with open_broker(buffer_size=0):
            pass


async def test_iter_batches_yields_each_burst_whole_and_in_order() -> None:
    async with open_broker() as broker, broker.subscribe() as events:
        for i in range(5):
            broker.publish(EventType.UPDATED, i)
        batches = iter_batches(events)
        assert [e.payload for e in await anext(batches)] == [0, 1, 2, 3, 4]
        broker.publish(EventType.UPDATED, 5)
        assert [e.payload for e in await anext(batches)] == [5]
