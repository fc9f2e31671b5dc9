"""Micro-batching: concurrent requests are queued and run through the model together.

The first job to arrive waits at most ``max_wait_ms`` for others (or until ``max_batch`` are queued); the batch
then runs in the batcher's own worker thread while the event loop keeps accepting requests, which queue up for
the next batch. One worker thread per model: torch already spreads one batch over the cores, and a model is never
used by two threads at once.

Hand-written (about 60 lines) because the candidates do not fit: Ray Serve's ``@serve.batch`` brings a cluster
runtime, and the Label Studio ML backend has no request batching.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


@dataclass
class BatchStats:
    batches: int = 0
    jobs: int = 0
    largest: int = 0

    def as_dict(self) -> dict[str, float | int]:
        mean = self.jobs / self.batches if self.batches else 0.0
        return {"batches": self.batches, "jobs": self.jobs, "largest_batch": self.largest, "mean_batch": mean}


class Batcher(Generic[T, R]):
    """Queue jobs from any number of coroutines; ``run(jobs)`` gets up to ``max_batch`` at a time and returns one
    result per job, in order. An exception from ``run`` fails every job of that batch (and only that batch)."""

    def __init__(self, run: Callable[[list[T]], Sequence[R]], *, max_batch: int, max_wait_ms: float, name: str):
        self._run = run
        self._max_batch = max_batch
        self._max_wait_s = max_wait_ms / 1000.0
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"serve-{name}")
        self._queue: asyncio.Queue[tuple[T, asyncio.Future[R]]] | None = None
        self._worker: asyncio.Task[None] | None = None
        self.stats = BatchStats()

    async def submit(self, job: T) -> R:
        loop = asyncio.get_running_loop()
        if self._queue is None or self._worker is None or self._worker.done():
            self._queue = asyncio.Queue()
            self._worker = loop.create_task(self._loop(self._queue))
        future: asyncio.Future[R] = loop.create_future()
        await self._queue.put((job, future))
        return await future

    async def _loop(self, queue: asyncio.Queue[tuple[T, asyncio.Future[R]]]) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await queue.get()]
            deadline = loop.time() + self._max_wait_s
            while len(batch) < self._max_batch:
                if not queue.empty():
                    batch.append(queue.get_nowait())
                    continue
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                try:
                    batch.append(await asyncio.wait_for(queue.get(), remaining))
                except TimeoutError:
                    break
            live = [(job, future) for job, future in batch if not future.done()]  # callers that gave up
            if not live:
                continue
            self.stats.batches += 1
            self.stats.jobs += len(live)
            self.stats.largest = max(self.stats.largest, len(live))
            try:
                results = await loop.run_in_executor(self._executor, self._run, [job for job, _ in live])
            except Exception as err:  # handed to each caller, which turns it into an HTTP answer
                for _, future in live:
                    if not future.done():
                        future.set_exception(err)
                continue
            for (_, future), result in zip(live, results, strict=True):
                if not future.done():
                    future.set_result(result)

    async def close(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
        self._executor.shutdown(wait=True, cancel_futures=True)
