"""Set-based apply for tables with a key: a few statements per run of one kind, not one per row.

Contract (as every applier, applier.py): one table's changes in source order inside the
caller's transaction.  The changes are cut into maximal runs of one kind; an UPDATE that changes
the key is a run of its own and goes through the generic statement.  Within a run, UPDATEs of one
key are coalesced (later values win, UNCHANGED keeps an earlier one; net-change reduction,
netchange.py, already leaves one per key) and grouped by which columns they set; each group,
each DELETE run and each INSERT run is staged and applied with one statement.  Fewer rows
matched than staged is divergence: the missing keys are looked up and named with their LSN.
Tables without a key (FULL identity) are inserted the same way; their UPDATEs and DELETEs keep
the generic one-row-at-a-time path.

A subclass stages and applies: :meth:`SetApplier.insert_set`, :meth:`SetApplier.update_set`
(returns the rows matched), :meth:`SetApplier.missing_keys` and :meth:`SetApplier.delete_set`
(returns the staged keys it found no row for).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from operator import itemgetter
from typing import Any

from ..model import UNCHANGED, ChangeKind, RowChange
from .applier import GenericApplier, identity_row, new_row

KEY_CHANGE = "K"


def runs(changes: Sequence[RowChange], key_idx: Sequence[int]) -> Iterator[tuple[Any, list[RowChange]]]:
    """Maximal runs of one kind; an UPDATE that changes the key is a run of its own (KEY_CHANGE)."""
    kind: Any = None
    run: list[RowChange] = []
    for ch in changes:
        k: Any = ch.kind
        if k is ChangeKind.UPDATE and key_idx and is_key_change(ch, key_idx):
            k = KEY_CHANGE
        if run and (k != kind or k == KEY_CHANGE):
            yield kind, run
            run = []
        kind = k
        run.append(ch)
    if run:
        yield kind, run


def is_key_change(ch: RowChange, key_idx: Sequence[int]) -> bool:
    """An UPDATE whose old key (when sent) differs from its new key."""
    if ch.old is None:
        return False
    new = new_row(ch)
    return any(new[i] is not UNCHANGED and new[i] != ch.old[i] for i in key_idx)


def _seq(got) -> list:
    """What an itemgetter of one or more indexes returned, as a list."""
    return list(got) if type(got) is tuple else [got]


class SetApplier(GenericApplier):
    """Runs of one kind as set-based statements (see the module docstring)."""

    def __init__(self, target, m):
        super().__init__(target, m)
        self._plain_keys = all(self.loaders[i] is str for i in self.key_idx)
        self._plain: dict = {}  # column indexes → whether every loader is str
        self._non_key = tuple(i for i in range(len(self.cols)) if i not in set(self.key_idx))

    def apply(self, conn, changes: Sequence[RowChange]) -> None:
        if not self.cols:
            super().apply(conn, changes)
            return
        for kind, run in runs(changes, self.key_idx):
            if kind == KEY_CHANGE or (kind is not ChangeKind.INSERT and not self.key_idx):
                super().apply(conn, run)
            elif kind is ChangeKind.INSERT:
                every = range(len(self.cols))
                rows = [self._converted(every, new_row(ch), ch) for ch in run]
                self.insert_set(conn, rows)
            elif kind is ChangeKind.UPDATE:
                self._update_run(conn, run)
            else:
                self._delete_run(conn, run)

    def _key(self, ch: RowChange) -> tuple:
        src = identity_row(ch)
        if self._plain_keys:
            return tuple(src[i] for i in self.key_idx)
        return tuple(self.convert(i, src[i], ch) for i in self.key_idx)

    def _converted(self, idx, values: Sequence, ch: RowChange) -> Sequence:
        """``values`` of columns ``idx`` through their loaders (PostgreSQL text as it is where
        the loader is ``str``: text in, text out)."""
        loaders = self.loaders
        plain = self._plain.get(idx)
        if plain is None:
            plain = self._plain[idx] = all(loaders[i] is str for i in idx)
        if plain:
            return values
        return [v if loaders[i] is str else self.convert(i, v, ch) for i, v in zip(idx, values)]

    def _update_run(self, conn, run: list[RowChange]) -> None:
        merged: dict[tuple, list] = {}  # key → [values, first change]
        for ch in run:
            key = self._key(ch)
            entry = merged.get(key)
            if entry is None:
                merged[key] = [new_row(ch), ch]
            else:
                entry[0] = tuple(o if v is UNCHANGED else v for o, v in zip(entry[0], new_row(ch)))
        groups: dict[tuple, list[tuple]] = {}
        every = self._non_key
        for key, (vals, _) in merged.items():
            pattern = tuple(i for i in every if vals[i] is not UNCHANGED) if UNCHANGED in vals else every
            groups.setdefault(pattern, []).append(key)
        for set_idx, keys in groups.items():
            get = itemgetter(*set_idx) if set_idx else (lambda _: ())
            values = [self._converted(set_idx, _seq(get(merged[k][0])), merged[k][1]) for k in keys]
            found = self.update_set(conn, set_idx, keys, values)
            if found < len(keys):
                chs = [merged[keys[n]][1] for n in sorted(self.missing_keys(conn, keys))]
                self.missing(chs or [merged[keys[0]][1]], len(keys) - found)

    def _delete_run(self, conn, run: list[RowChange]) -> None:
        first: dict[tuple, RowChange] = {}
        again = []
        for ch in run:
            key = self._key(ch)
            if key in first:
                again.append(ch)  # deleted twice in one run: the second finds nothing
            else:
                first[key] = ch
        keys = list(first)
        chs = [first[keys[n]] for n in sorted(self.delete_set(conn, keys))] + again
        if chs:
            self.missing(chs, len(chs))

    # ------------------------------------------------------------ per database
    def insert_set(self, conn, rows: list[Sequence]) -> None:
        """INSERT the converted rows (every column, in order)."""
        raise NotImplementedError

    def update_set(self, conn, set_idx: tuple, keys: list[tuple], values: list[Sequence]) -> int:
        """UPDATE columns ``set_idx`` of the rows with ``keys`` to ``values``; rows matched."""
        raise NotImplementedError

    def missing_keys(self, conn, keys: list[tuple]) -> list[int]:
        """The positions in ``keys`` of those that no target row has."""
        raise NotImplementedError

    def delete_set(self, conn, keys: list[tuple]) -> list[int]:
        """DELETE the rows with ``keys``; returns the positions in ``keys`` of those without a row."""
        raise NotImplementedError
