"""The hand-over between the engine's two analysis threads.

The preparing thread (read, segment …) puts each batch it has prepared; the
scoring thread takes them in order. The queue holds few batches, so a
preparing side that runs ahead waits (back-pressure) instead of filling the
memory with decoded images, and at most a few batches have begun an attempt
without being committed.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterable
from typing import Generic, TypeVar

S = TypeVar("S")
T = TypeVar("T")


class BatchQueue(Generic[T]):
    """A bounded, closable queue between one producer and one consumer.

    ``close()`` (producer: nothing more comes) lets ``get`` return None once the
    queue is empty; ``abandon()`` (consumer: it takes nothing more) makes every
    later ``put`` return False and hands back what was left, so that neither
    side ever waits for one that has gone.
    """

    def __init__(self, maxsize: int = 1) -> None:
        self._items: deque[T] = deque()
        self._maxsize = max(1, maxsize)
        self._cond = threading.Condition()
        self._closed = False
        self._abandoned = False

    def put(self, item: T) -> bool:
        """Wait for room and add ``item``; False when the consumer has gone."""
        with self._cond:
            while len(self._items) >= self._maxsize and not self._abandoned:
                self._cond.wait()
            if self._abandoned:
                return False
            self._items.append(item)
            self._cond.notify_all()
            return True

    def get(self) -> T | None:
        """The next item, waiting for one; None once closed and empty."""
        with self._cond:
            while not self._items and not self._closed:
                self._cond.wait()
            if not self._items:
                return None
            item = self._items.popleft()
            self._cond.notify_all()
            return item

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def abandon(self) -> list[T]:
        """Take nothing more; returns the items nobody will take."""
        with self._cond:
            self._abandoned = True
            left = list(self._items)
            self._items.clear()
            self._cond.notify_all()
            return left

    def __len__(self) -> int:
        with self._cond:
            return len(self._items)


def overlapped(items: Iterable[S], prepare: Callable[[S], T], finish: Callable[[T], None],
               give_back: Callable[[list[T]], None], ahead: int = 1) -> None:
    """Prepare each item on this thread while a second thread finishes the ones
    before, in order (at most ``ahead`` waiting between them). A fatal error on
    either side stops both and propagates; what was prepared and not finished is
    given back."""
    batches: BatchQueue[T] = BatchQueue(ahead)
    errors: list[BaseException] = []

    def consume() -> None:
        try:
            while (batch := batches.get()) is not None:
                finish(batch)
        except BaseException as exc:
            errors.append(exc)
        finally:
            give_back(batches.abandon())

    consumer = threading.Thread(target=consume, name="nvir-score", daemon=True)
    consumer.start()
    try:
        for item in items:
            batch = prepare(item)
            if not batches.put(batch):
                give_back([batch])
                break
    finally:
        batches.close()
        consumer.join()
    if errors:
        raise errors[0]
