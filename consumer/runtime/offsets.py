"""Offset tracking for one partition: what may be committed once records finish out of order."""

from __future__ import annotations

from collections import deque


class PartitionOffsets:
    """Records of one partition in fetch order; the commit position is the first unfinished offset.

    Records of different keys finish out of order. An offset is committable only when it and every earlier
    offset fetched for the partition are finished (handled, or dead-lettered with the broker's ack).
    """

    __slots__ = ("_done", "_pending", "_position", "add", "committed")

    def __init__(self) -> None:
        self._pending: deque[int] = deque()
        self._done: set[int] = set()
        self._position: int | None = None
        self.committed: int | None = None
        self.add = self._pending.append
        """Track a fetched offset (offsets arrive in order); the deque's own append, as this runs per record."""

    def __len__(self) -> int:
        return len(self._pending)

    @property
    def unfinished(self) -> int:
        return len(self._pending) - len(self._done)

    def finish(self, offset: int) -> None:
        pending, done = self._pending, self._done
        if pending and pending[0] == offset:  # the common case: the oldest record finished
            pending.popleft()
            self._position = offset + 1
            if not done:
                return
        else:
            done.add(offset)
        while pending and pending[0] in done:
            head = pending.popleft()
            done.discard(head)
            self._position = head + 1

    def commit_position(self) -> int | None:
        """The offset to commit (the next record to read), or None when nothing new finished."""
        if self._position is None or self._position == self.committed:
            return None
        return self._position

    @property
    def position(self) -> int | None:
        return self._position
