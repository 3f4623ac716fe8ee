"""Batching that forms a batch when the model is free (the segmenter replica's).

Ray Serve 2.60's `@serve.batch` forms its next batch as soon as that batch's wait ends, while the previous one
is still in the model (`_process_batches` does not wait for it; batches queue for the model one behind the
other): a batch holds what arrived within `batch_wait_timeout_s` of its first request, however long the model
was busy, so under load it formed batches of 4 to 6 at 32 clients. Here one loop takes the next batch only
when the previous forward pass has returned, so it holds everything that arrived meanwhile (up to
`max_batch_size`), after waiting up to `wait_s()` for more when it is not full.
"""
import asyncio
import time
from collections.abc import Awaitable, Callable


class Batcher:
    """`await submit(item)` -> that item's result from `run(items)` (one call per batch, never two at once)."""

    def __init__(self, run: Callable[[list], Awaitable[list]], max_batch_size: int, wait_s: Callable[[], float]):
        self.run, self.max_batch_size, self.wait_s = run, max_batch_size, wait_s
        self._pending: list[tuple[object, asyncio.Future]] = []
        self._arrived: asyncio.Event | None = None
        self._task: asyncio.Task | None = None

    async def submit(self, item):
        loop = asyncio.get_running_loop()
        if self._task is None or self._task.done():   # started in the replica's loop, on first use
            self._arrived = asyncio.Event()
            self._task = loop.create_task(self._loop())
        future = loop.create_future()
        self._pending.append((item, future))
        self._arrived.set()
        return await future

    async def _loop(self):
        while True:
            while not self._pending:
                self._arrived.clear()
                await self._arrived.wait()
            deadline = time.monotonic() + self.wait_s()
            while len(self._pending) < self.max_batch_size and (left := deadline - time.monotonic()) > 0:
                self._arrived.clear()
                try:
                    await asyncio.wait_for(self._arrived.wait(), left)
                except asyncio.TimeoutError:
                    break
            batch = [(i, f) for i, f in self._pending[:self.max_batch_size] if not f.done()]  # done: cancelled
            del self._pending[:self.max_batch_size]
            if batch:
                await self._run_batch(batch)

    async def _run_batch(self, batch: list[tuple[object, asyncio.Future]]):
        try:
            results = await self.run([item for item, _ in batch])
        except Exception as e:  # noqa: BLE001  (each waiting request gets the failure)
            for _, f in batch:
                if not f.done():
                    f.set_exception(e)
            return
        for (_, f), result in zip(batch, results):
            if not f.done():
                f.set_result(result)
