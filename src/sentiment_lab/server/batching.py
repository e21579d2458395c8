"""Dynamic micro-batching: concurrent requests are grouped into one call of a batch function.

Each request waits in an asyncio queue. One worker task takes the first waiting request, then keeps collecting
requests until the batch holds `max_batch_size` texts or `max_wait_ms` has passed since the first one, and runs
the batch function in a single worker thread so the event loop stays free to accept and answer requests. The
queue is bounded in texts: a request that would overflow it is refused at once (QueueFullError, HTTP 503) rather
than letting memory and latency grow without limit under overload.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from sentiment_lab.errors import ConfigError

log = logging.getLogger(__name__)

BatchFn = Callable[[list[str]], list[dict[str, Any]]]


class QueueFullError(Exception):
    """The batcher holds as many texts as it may; the client should retry later."""


class BatcherClosedError(Exception):
    """The batcher is not running (not started yet, or shutting down)."""


@dataclass
class _Request:
    texts: list[str]
    future: asyncio.Future[list[dict[str, Any]]]
    enqueued: float = field(default_factory=time.perf_counter)


_STOP = object()


class MicroBatcher:
    """Groups concurrent `submit` calls into batches of at most `max_batch_size` texts for one batch function.

    max_wait_ms: how long the first request of a batch waits for company; 0 batches only what is already queued.
    max_queue: texts that may wait at once; beyond it `submit` raises QueueFullError.
    on_batch: called after every batch with (texts in the batch, seconds the batch function took).
    A request larger than max_batch_size runs as a batch of its own (the batch function splits it as it needs).
    """

    def __init__(
        self,
        batch_fn: BatchFn,
        max_batch_size: int = 32,
        max_wait_ms: float = 5.0,
        max_queue: int = 1024,
        on_batch: Callable[[int, float], None] | None = None,
        executor: Executor | None = None,
    ) -> None:
        for name, value, low in (("max_batch_size", max_batch_size, 1), ("max_queue", max_queue, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ConfigError(f"{name} must be an integer >= {low}, got {value!r}")
        if not 0 <= max_wait_ms <= 10_000:
            raise ConfigError(f"max_wait_ms must be between 0 and 10000 ms, got {max_wait_ms!r}")
        self.batch_fn = batch_fn
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_ms / 1000
        self.max_queue = max_queue
        self.on_batch = on_batch
        # One thread: forward passes on one CPU model compete for the same cores, so they run one at a time.
        self._own_executor = executor is None
        self.executor: Executor = executor or ThreadPoolExecutor(max_workers=1, thread_name_prefix="model")
        self.pending = 0  # texts queued or in the running batch
        self._queue: asyncio.Queue[Any] | None = None
        self._worker: asyncio.Task[None] | None = None
        self._carry: _Request | None = None
        self._closing = False

    @property
    def running(self) -> bool:
        """True between start() and the beginning of stop()."""
        return self._worker is not None and not self._closing and not self._worker.done()

    async def start(self) -> None:
        """Start the worker task on the running event loop."""
        if self._worker is not None:
            return
        self._queue = asyncio.Queue()
        self._closing = False
        self._worker = asyncio.create_task(self._run(), name="micro-batcher")

    async def stop(self) -> None:
        """Refuse new requests, finish every queued one, then stop the worker."""
        if self._worker is None or self._queue is None:
            return
        self._closing = True
        await self._queue.put(_STOP)
        await self._worker
        self._worker = None
        if self._own_executor:
            self.executor.shutdown(wait=True)

    async def submit(self, texts: list[str]) -> list[dict[str, Any]]:
        """The batch function's results for `texts`, computed together with other waiting requests.

        Raises QueueFullError when accepting the texts would exceed max_queue, BatcherClosedError when stopped,
        and whatever the batch function raised for these texts. Cancelling the awaiting task (a timeout)
        drops the request if its batch has not started.
        """
        if not self.running or self._queue is None:
            raise BatcherClosedError("the model is not ready (starting or shutting down)")
        if not texts:
            return []
        if self.pending + len(texts) > self.max_queue:
            raise QueueFullError(f"{self.pending} texts are waiting (limit {self.max_queue})")
        request = _Request(texts, asyncio.get_running_loop().create_future())
        self.pending += len(texts)
        self._queue.put_nowait(request)
        return await request.future

    async def _next(self, timeout: float | None) -> Any:
        """The carried-over request, else the next queued item; None when `timeout` passes first."""
        assert self._queue is not None
        if self._carry is not None:
            request, self._carry = self._carry, None
            return request
        if timeout is None:
            return await self._queue.get()
        if timeout <= 0:
            return self._queue.get_nowait() if not self._queue.empty() else None
        try:
            return await asyncio.wait_for(self._queue.get(), timeout)
        except asyncio.TimeoutError:
            return None

    def _drop_if_cancelled(self, request: _Request) -> bool:
        if request.future.cancelled():  # the client gave up (timeout) before its batch started
            self.pending -= len(request.texts)
            return True
        return False

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        stopping = False
        # _STOP is queued behind every accepted request (submit refuses once closing), so reaching it means
        # only the carried-over request, if any, is left.
        while not stopping or self._carry is not None:
            first = await self._next(None)
            if first is _STOP:
                stopping = True
                continue
            if self._drop_if_cancelled(first):
                continue
            batch, size = [first], len(first.texts)
            deadline = loop.time() + self.max_wait_s
            while size < self.max_batch_size and not stopping:
                item = await self._next(deadline - loop.time())
                if item is None:
                    break
                if item is _STOP:
                    stopping = True  # finish this batch and whatever is carried, then stop
                    break
                if self._drop_if_cancelled(item):
                    continue
                if size + len(item.texts) > self.max_batch_size:
                    self._carry = item  # it starts the next batch
                    break
                batch.append(item)
                size += len(item.texts)
            await self._run_batch(loop, batch, size)

    async def _run_batch(self, loop: asyncio.AbstractEventLoop, batch: list[_Request], size: int) -> None:
        texts = [t for r in batch for t in r.texts]
        start = time.perf_counter()
        try:
            results = await loop.run_in_executor(self.executor, self.batch_fn, texts)
            if len(results) != len(texts):
                raise RuntimeError(f"the batch function returned {len(results)} results for {len(texts)} texts")
        except Exception as exc:
            if len(batch) > 1:
                # One bad request must not fail the requests it happened to share a batch with.
                log.warning("batch of %d requests failed (%s); retrying them one by one", len(batch), exc)
                for request in batch:
                    await self._run_batch(loop, [request], len(request.texts))
                return
            self._finish(batch[0], exception=exc)
            return
        finally:
            if self.on_batch is not None:
                self.on_batch(size, time.perf_counter() - start)
        offset = 0
        for request in batch:
            self._finish(request, results[offset : offset + len(request.texts)])
            offset += len(request.texts)

    def _finish(
        self, request: _Request, results: list[dict[str, Any]] | None = None, exception: BaseException | None = None
    ) -> None:
        self.pending -= len(request.texts)
        if request.future.done():  # cancelled while its batch ran: nobody is waiting for the answer
            return
        if exception is not None:
            request.future.set_exception(exception)
        else:
            request.future.set_result(results or [])
