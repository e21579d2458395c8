"""The app's lifespan: one model thread and the micro-batcher start with the app and drain when it stops."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass

from fastapi import FastAPI

from sentiment_lab.server.batching import BatchFn, MicroBatcher
from sentiment_lab.server.metrics import ServerMetrics
from sentiment_lab.server.settings import ServerSettings


@dataclass
class ModelState:
    """What the routes share with the lifespan: the batcher and model thread while running, explanations pending."""

    ready: bool = False
    batcher: MicroBatcher | None = None
    executor: ThreadPoolExecutor | None = None
    explain_pending: int = 0


def model_lifespan(
    predict_batch: BatchFn, settings: ServerSettings, metrics: ServerMetrics, state: ModelState
) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    """The lifespan that runs `predict_batch` behind a MicroBatcher in one model thread, recorded in `state`."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # One model thread shared by batches and explanations: a CPU model runs one forward pass at a time.
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="model")
        batcher = MicroBatcher(
            predict_batch,
            settings.max_batch_size,
            settings.max_wait_ms,
            settings.max_queue,
            on_batch=metrics.observe_batch,
            executor=executor,
        )
        metrics.queue.set_function(lambda: batcher.pending)
        await batcher.start()
        state.batcher, state.executor, state.ready = batcher, executor, True
        try:
            yield
        finally:
            # uvicorn calls this after in-flight requests have finished (timeout_graceful_shutdown).
            state.ready = False
            await batcher.stop()
            executor.shutdown(wait=True)

    return lifespan
