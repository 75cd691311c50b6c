"""Each user's movies, streamed from batches into compressed sparse rows (CSR).

What the evaluation leaves out (the movies a user rated in training) and what the export
writes as ``rated.npz`` are the same structure: per user, a sorted set of integers (movie
rows or ids). :class:`PairAccumulator` gathers them batch by batch as numpy arrays,
de-duplicating as it goes (sequence examples repeat each context movie up to ``L`` times),
so memory holds the distinct (user, movie) pairs, 16 bytes each, never per-example Python
objects. :class:`UserHistory` is the result: ``user_ids [U]``, ``row_splits [U + 1]``,
``values [N]``. Any int64 users and values.
"""

from __future__ import annotations

import dataclasses
from typing import List, Optional, Tuple

import numpy as np

# Pairs buffered before de-duplicating (a few MB).
_COMPACT_EVERY = 1 << 20


@dataclasses.dataclass(frozen=True)
class UserHistory:
    """Per user (ascending ``user_ids`` ``[U]``), the sorted distinct values
    ``values[row_splits[i]:row_splits[i + 1]]`` (``row_splits`` ``[U + 1]``)."""

    user_ids: np.ndarray
    row_splits: np.ndarray
    values: np.ndarray

    def __len__(self) -> int:
        return int(self.user_ids.shape[0])

    def position(self, user: int) -> Optional[int]:
        """The row of ``user`` in ``user_ids`` (binary search), None if absent."""
        position = int(np.searchsorted(self.user_ids, user))
        if position >= len(self) or self.user_ids[position] != user:
            return None
        return position

    def get(self, user: int, default=None) -> Optional[np.ndarray]:
        """int64 ``[n]``: the values of ``user`` (``default`` for an unknown user)."""
        position = self.position(user)
        if position is None:
            return default
        return self.values[self.row_splits[position]:self.row_splits[position + 1]]

    def pairs_of(self, users: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """For a batch of ``users`` ``[b]`` (repeats allowed): ``(positions [E], values
        [E])``, every value of every user with that user's position in the batch."""
        users = np.asarray(users, np.int64)
        position = np.clip(np.searchsorted(self.user_ids, users), 0, max(len(self) - 1, 0))
        known = (self.user_ids[position] == users) if len(self) else np.zeros(len(users), bool)
        starts = np.where(known, self.row_splits[position], 0)
        lengths = np.where(known, self.row_splits[position + 1] - starts, 0) if len(self) \
            else np.zeros(len(users), np.int64)
        batch_positions = np.repeat(np.arange(len(users)), lengths)
        offsets = np.arange(int(lengths.sum())) - np.repeat(np.cumsum(lengths) - lengths,
                                                             lengths)
        return batch_positions, self.values[np.repeat(starts, lengths) + offsets]


class PairAccumulator:
    """Distinct (user, value) int64 pairs, added a batch at a time."""

    def __init__(self):
        self._users: List[np.ndarray] = []
        self._values: List[np.ndarray] = []
        self._buffered = 0

    def add(self, users: np.ndarray, values: np.ndarray) -> None:
        """``users`` ``[n]`` and ``values`` ``[n]``; pairs with a negative value are skipped."""
        users = np.asarray(users, np.int64).reshape(-1)
        values = np.asarray(values, np.int64).reshape(-1)
        keep = values >= 0
        self._users.append(users[keep])
        self._values.append(values[keep])
        self._buffered += int(keep.sum())
        if self._buffered >= _COMPACT_EVERY:
            self._compact()

    def _compact(self) -> Tuple[np.ndarray, np.ndarray]:
        users = np.concatenate(self._users) if self._users else np.zeros(0, np.int64)
        values = np.concatenate(self._values) if self._values else np.zeros(0, np.int64)
        order = np.lexsort((values, users))
        users, values = users[order], values[order]
        distinct = np.ones(len(users), bool)
        distinct[1:] = (users[1:] != users[:-1]) | (values[1:] != values[:-1])
        users, values = users[distinct], values[distinct]
        self._users, self._values, self._buffered = [users], [values], 0
        return users, values

    def result(self) -> UserHistory:
        """The pairs so far, users ascending, each user's values ascending."""
        users, values = self._compact()
        user_ids, starts = np.unique(users, return_index=True)
        return UserHistory(user_ids, np.append(starts, len(users)).astype(np.int64), values)
