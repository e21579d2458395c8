"""The micro-batcher: grouping, size cap, bounded queue, failure isolation, cancellation, draining on stop."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest

from sentiment_lab.errors import ConfigError
from sentiment_lab.server.batching import BatcherClosedError, MicroBatcher, QueueFullError


class Recorder:
    """A batch function that echoes its texts and records every batch it was given."""

    def __init__(self, delay_s: float = 0.0, gate: threading.Event | None = None) -> None:
        self.batches: list[list[str]] = []
        self.delay_s = delay_s
        self.gate = gate

    def __call__(self, texts: list[str]) -> list[dict[str, Any]]:
        if self.gate is not None:
            assert self.gate.wait(10), "test gate never opened"
        if self.delay_s:
            time.sleep(self.delay_s)
        if any(t == "bad" for t in texts):
            raise ValueError("bad text")
        self.batches.append(list(texts))
        return [{"echo": t} for t in texts]


def test_concurrent_requests_share_one_forward_pass() -> None:
    fn = Recorder()

    async def main() -> list[list[dict[str, Any]]]:
        batcher = MicroBatcher(fn, max_batch_size=32, max_wait_ms=200)
        await batcher.start()
        results = await asyncio.gather(*(batcher.submit([f"t{i}"]) for i in range(10)))
        await batcher.stop()
        return results

    results = asyncio.run(main())
    assert results == [[{"echo": f"t{i}"}] for i in range(10)]  # each caller gets its own answer, in order
    assert len(fn.batches) == 1 and sorted(fn.batches[0]) == sorted(f"t{i}" for i in range(10))


def test_batches_never_exceed_max_batch_size_and_keep_request_order() -> None:
    fn = Recorder()

    async def main() -> list[list[dict[str, Any]]]:
        batcher = MicroBatcher(fn, max_batch_size=8, max_wait_ms=50)
        await batcher.start()
        results = await asyncio.gather(*(batcher.submit([f"r{r}-{k}" for k in range(3)]) for r in range(10)))
        await batcher.stop()
        return results

    results = asyncio.run(main())
    for r, res in enumerate(results):
        assert [x["echo"] for x in res] == [f"r{r}-{k}" for k in range(3)]
    assert all(len(b) <= 8 for b in fn.batches)
    assert sum(len(b) for b in fn.batches) == 30
    assert len(fn.batches) == 5  # 2 requests of 3 texts fit in 8; 10 requests need 5 batches


def test_request_larger_than_max_batch_runs_alone() -> None:
    fn = Recorder()

    async def main() -> list[dict[str, Any]]:
        batcher = MicroBatcher(fn, max_batch_size=4, max_wait_ms=0)
        await batcher.start()
        out = await batcher.submit([f"x{i}" for i in range(10)])
        await batcher.stop()
        return out

    assert [x["echo"] for x in asyncio.run(main())] == [f"x{i}" for i in range(10)]
    assert [len(b) for b in fn.batches] == [10]


def test_full_queue_refuses_new_requests_instead_of_growing() -> None:
    gate = threading.Event()
    fn = Recorder(gate=gate)

    async def main() -> tuple[list[Any], int]:
        batcher = MicroBatcher(fn, max_batch_size=2, max_wait_ms=0, max_queue=6)
        await batcher.start()
        accepted = [asyncio.create_task(batcher.submit([f"a{i}", f"b{i}"])) for i in range(3)]
        await asyncio.sleep(0.05)  # the first batch is now blocked in the model thread
        with pytest.raises(QueueFullError, match="limit 6"):
            await batcher.submit(["one too many"])
        pending_when_full = batcher.pending
        gate.set()
        results = await asyncio.gather(*accepted)
        assert batcher.pending == 0
        await batcher.submit(["fits again"])  # capacity comes back once the queue drains
        await batcher.stop()
        return results, pending_when_full

    results, pending_when_full = asyncio.run(main())
    assert pending_when_full == 6
    assert [[x["echo"] for x in r] for r in results] == [[f"a{i}", f"b{i}"] for i in range(3)]


def test_a_failing_request_does_not_fail_its_batch_mates() -> None:
    fn = Recorder()

    async def main() -> list[Any]:
        batcher = MicroBatcher(fn, max_batch_size=32, max_wait_ms=100)
        await batcher.start()
        out = await asyncio.gather(
            batcher.submit(["good 1"]), batcher.submit(["bad"]), batcher.submit(["good 2"]), return_exceptions=True
        )
        await batcher.stop()
        return out

    good1, bad, good2 = asyncio.run(main())
    assert good1 == [{"echo": "good 1"}] and good2 == [{"echo": "good 2"}]
    assert isinstance(bad, ValueError)


def test_a_request_that_times_out_in_the_queue_is_never_computed() -> None:
    gate = threading.Event()
    fn = Recorder(gate=gate)

    async def main() -> int:
        batcher = MicroBatcher(fn, max_batch_size=1, max_wait_ms=0)
        await batcher.start()
        first = asyncio.create_task(batcher.submit(["first"]))
        await asyncio.sleep(0.05)  # "first" occupies the model thread
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(batcher.submit(["abandoned"]), 0.05)
        gate.set()
        await first
        await batcher.stop()
        return batcher.pending

    assert asyncio.run(main()) == 0
    assert fn.batches == [["first"]]


def test_stop_finishes_queued_requests_then_refuses_new_ones() -> None:
    fn = Recorder(delay_s=0.02)

    async def main() -> list[Any]:
        batcher = MicroBatcher(fn, max_batch_size=2, max_wait_ms=0)
        await batcher.start()
        waiting = [asyncio.create_task(batcher.submit([f"q{i}"])) for i in range(7)]
        await asyncio.sleep(0)  # all seven are queued
        await batcher.stop()
        assert all(t.done() for t in waiting)
        with pytest.raises(BatcherClosedError):
            await batcher.submit(["late"])
        return [t.result() for t in waiting]

    assert asyncio.run(main()) == [[{"echo": f"q{i}"}] for i in range(7)]


def test_event_loop_stays_free_while_the_model_runs() -> None:
    fn = Recorder(delay_s=0.3)

    async def main() -> int:
        batcher = MicroBatcher(fn, max_wait_ms=0)
        await batcher.start()
        task = asyncio.create_task(batcher.submit(["slow"]))
        ticks = 0
        while not task.done():
            await asyncio.sleep(0.01)
            ticks += 1
        await batcher.stop()
        return ticks

    assert asyncio.run(main()) >= 5  # a blocking model call on the loop would allow one tick at most


def test_batch_hook_sees_every_forward_pass() -> None:
    seen: list[int] = []

    async def main() -> None:
        batcher = MicroBatcher(Recorder(), max_batch_size=4, max_wait_ms=50, on_batch=lambda n, s: seen.append(n))
        await batcher.start()
        await asyncio.gather(*(batcher.submit([str(i)]) for i in range(6)))
        await batcher.stop()

    asyncio.run(main())
    assert sorted(seen) == [2, 4]


@pytest.mark.parametrize(
    "kwargs, message",
    [({"max_batch_size": 0}, "max_batch_size"), ({"max_queue": -1}, "max_queue"), ({"max_wait_ms": -5}, "max_wait_ms")],
)
def test_bad_settings_are_config_errors(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        MicroBatcher(Recorder(), **kwargs)
