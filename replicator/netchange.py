"""Net changes: one batch's row changes of one table reduced to their effect per key (pure logic).

A batch is one target transaction holding whole source transactions, so only its end state is
ever visible.  Per key, the changes collapse to one entry:

=====================  ==================================================================
changes of one key      net entry
=====================  ==================================================================
INSERT, UPDATE…         one INSERT of the last image
UPDATE, UPDATE…         one UPDATE (an UNCHANGED TOAST value keeps the last value sent)
INSERT … DELETE         nothing
UPDATE… DELETE          one DELETE
DELETE, INSERT          one UPDATE of every column (the row existed and exists again)
=====================  ==================================================================

A key change (an UPDATE whose old key differs from the new one) moves the entry: the old key
becomes a DELETE (or nothing, when the batch inserted it) and the new key an INSERT of the full
image (an UPDATE of every column when the batch deleted that key before).  Where the full image
is not known (UNCHANGED TOAST values of a row the batch did not write) or a transition cannot
happen on a consistent target (an INSERT of a key the batch holds, an UPDATE or DELETE of a key
it deleted), the entries so far are *sealed*: emitted in order, then that change as it came, and
reduction starts afresh after it, so applying the result is still equivalent to applying every
change one by one (and a diverged target still fails where it would have).

Contract of :meth:`NetChanges.drain`: a list of changes whose application in order leaves the
target as the original changes applied one by one would.  Within one unsealed stretch each key
appears at most once, DELETEs first, then UPDATEs, then INSERTs, so an applier may run each kind
as one set-based statement.  A divergence (a row to change that is missing) is reported with the
LSN of the first change that needed the row.  Tables without a key (FULL identity with
duplicates) are passed through unchanged, in order.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from operator import itemgetter
from typing import Any

from .model import UNCHANGED, ChangeKind, RowChange

_I, _U, _D, _R = 0, 1, 2, 3  # entry kinds: insert, update, delete, replace (delete + insert)
INSERT, UPDATE, DELETE = ChangeKind.INSERT, ChangeKind.UPDATE, ChangeKind.DELETE


def merged(base: Sequence, new: tuple) -> tuple:
    """``new`` with each UNCHANGED position taken from ``base``."""
    if UNCHANGED not in new:
        return new
    return tuple(b if n is UNCHANGED else n for b, n in zip(base, new))


class NetChanges:
    """The pending changes of one table within a batch, reduced per key as they arrive.

    Entries are lists ``[kind, values, change_with_old, first_change]``: ``values`` the image to
    write (I, U, R), ``change_with_old`` the change whose old tuple locates a DELETE,
    ``first_change`` the change that opened the entry (its LSN is the one errors name)."""

    __slots__ = ("key_idx", "entries", "done", "_key")

    def __init__(self, key_idx: Sequence[int]):
        self.key_idx = tuple(key_idx)
        self.entries: dict[Any, list] = {}
        self.done: list[RowChange] = []
        self._key: Callable[[Any], Any] = itemgetter(*key_idx) if key_idx else tuple

    def __len__(self) -> int:
        """Changes held: the entries plus what was sealed (memory is bounded by the caller)."""
        return len(self.entries) + len(self.done)

    def add(self, ch: RowChange) -> int:
        """Fold one change (source order) into the entries; returns how many more changes are
        held than before (1, 0 or -1, or more after a seal)."""
        before = len(self.entries) + len(self.done)
        if not self.key_idx:
            self.done.append(ch)
        elif ch.kind is UPDATE:
            self._update(ch)
        elif ch.kind is INSERT:
            self._insert(ch)
        else:
            self._delete(ch)
        return len(self.entries) + len(self.done) - before

    def _insert(self, ch: RowChange) -> None:
        k = self._key(ch.new)
        e = self.entries.get(k)
        if e is None:
            self.entries[k] = [_I, ch.new, None, ch]
        elif e[0] == _D:
            e[0], e[1] = _R, ch.new
        else:
            self._seal(ch)

    def _delete(self, ch: RowChange) -> None:
        k = self._key(ch.old)
        e = self.entries.get(k)
        if e is None:
            self.entries[k] = [_D, None, ch, ch]
        elif e[0] == _I:
            del self.entries[k]
        elif e[0] == _D:
            self._seal(ch)
        else:
            e[0], e[1], e[2] = _D, None, ch

    def _update(self, ch: RowChange) -> None:
        new = ch.new
        assert new is not None, "UPDATE without a new tuple"
        if ch.old is not None:
            k = self._key(ch.old)
            nk = self._key(merged(ch.old, new)) if UNCHANGED in new else self._key(new)
            if k != nk:
                self._move(ch, k, nk)
                return
        else:
            k = self._key(new)
        e = self.entries.get(k)
        if e is None:
            self.entries[k] = [_U, new, None, ch]
        elif e[0] == _D:
            self._seal(ch)
        else:
            e[1] = merged(e[1], new)

    def _move(self, ch: RowChange, k, nk) -> None:
        """A key change: the row leaves ``k`` and arrives at ``nk`` with its full image."""
        assert ch.new is not None
        e, f = self.entries.get(k), self.entries.get(nk)
        if e is not None and e[0] in (_I, _R):
            full: tuple | None = merged(e[1], ch.new)
        else:
            full = None if UNCHANGED in ch.new else ch.new
        if full is None or (e is not None and e[0] == _D) or (f is not None and f[0] != _D):
            self._seal(ch)
            return
        if e is not None and e[0] == _I:
            del self.entries[k]
        else:  # the row existed before the batch (or the batch re-created it): delete it there
            self.entries[k] = [_D, None, ch, ch if e is None else e[3]]
        if f is None:
            self.entries[nk] = [_I, full, None, ch]
        else:
            f[0], f[1] = _R, full

    def _seal(self, ch: RowChange) -> None:
        """Emit the entries so far, then ``ch`` as it came; reduce afresh after it."""
        self.done.extend(self._emit())
        self.entries = {}
        self.done.append(ch)

    def _emit(self) -> list[RowChange]:
        dels: list[RowChange] = []
        ups: list[RowChange] = []
        ins: list[RowChange] = []
        for kind, values, with_old, first in self.entries.values():
            if kind == _D:
                if with_old is first and first.kind is DELETE:
                    dels.append(first)
                else:
                    dels.append(
                        RowChange(DELETE, first.table, None, with_old.old, with_old.old_is_key, first.lsn)
                    )
            elif kind == _I:
                reuse = values is first.new and first.kind is INSERT
                ins.append(first if reuse else RowChange(INSERT, first.table, values, lsn=first.lsn))
            elif kind == _U and values is first.new and first.old is None:
                ups.append(first)
            else:
                ups.append(RowChange(UPDATE, first.table, values, lsn=first.lsn))
        return dels + ups + ins

    def drain(self) -> list[RowChange]:
        """The reduced changes in application order (see the module docstring); empties self."""
        out = self.done
        out.extend(self._emit())
        self.entries, self.done = {}, []
        return out
