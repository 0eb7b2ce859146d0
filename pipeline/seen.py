"""Rows seen so far in one source, kept compact so a long log fits: 64-bit hashes of id and content.

A record's rows are admitted together. A row that repeats an earlier row exactly is dropped (Arena-Hard
repeats the question in every model's answer file); a row that reuses an earlier id with other content
makes ``admit`` return a reason, and the record's rows are not remembered (the caller rejects it). Two
different ids or contents sharing a 64-bit hash is about a 1-in-10^7 event at 10^6 rows.

>>> seen = SeenRows({"prompts": ("prompt_id",)})
>>> rows = {"prompts": [{"prompt_id": "p1", "text": "hi"}]}
>>> seen.admit("a.jsonl:1", rows, Counter()) is None
True
>>> again, skipped = {"prompts": [{"prompt_id": "p1", "text": "hi"}]}, Counter()
>>> seen.admit("a.jsonl:2", again, skipped), again["prompts"], dict(skipped)
(None, [], {'prompts row identical to an earlier one': 1})
>>> seen.admit("b.jsonl:7", {"prompts": [{"prompt_id": "p1", "text": "other"}]}, Counter())
"prompts id ('p1',) already produced by a.jsonl:1 with different content (two records share an id: ...)"
"""

from __future__ import annotations

import io
import pickle
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import xxhash


class SeenRows:
    """The rows admitted so far, by table; ``id_columns`` names each table's id columns."""

    def __init__(self, id_columns: Mapping[str, Sequence[str]]) -> None:
        self.id_columns = id_columns
        self.seen: dict[int, int] = {}  # hash(table, id) -> hash(content) << 64 | file number << 40 | row
        self.files: dict[str, int] = {}  # the source's files, numbered in reading order

    def _at(self, where: str) -> int:
        file, _, row = where.rpartition(":")
        return self.files.setdefault(file, len(self.files)) << 40 | int(row)

    def _where(self, at: int) -> str:
        return f"{list(self.files)[at >> 40]}:{at & ((1 << 40) - 1)}"

    def _key(self, table: str, row: dict[str, Any]) -> int:
        return xxhash.xxh64_intdigest("\x1f".join([table, *(str(row[c]) for c in self.id_columns[table])]).encode())

    def _ids(self, table: str, row: dict[str, Any]) -> tuple[Any, ...]:
        """The row's id values, as a clash's reason names them."""
        return tuple(row[c] for c in self.id_columns[table])

    @staticmethod
    def _content(row: dict[str, Any]) -> int:
        """A hash of the row's values: its fields in name order, each as pickle writes it without its memo, so
        equal values give equal bytes whatever objects hold them (pickle's memo writes a string met twice in a
        row as a back-reference). Nested objects are taken in their own key order, fixed for rows a record
        model dumped. Four times faster than hashing the row's JSON, which ingest did for every row."""
        buf = io.BytesIO()
        pickler = pickle.Pickler(buf, protocol=5)
        pickler.fast = True  # no memo: the bytes depend on values only (rows hold no cycles)
        pickler.dump([(k, row[k]) for k in sorted(row)])
        return xxhash.xxh64_intdigest(buf.getbuffer())

    def admit(self, where: str, rows: dict[str, list[dict[str, Any]]], skipped: Counter) -> str | None:
        """Admit one record's ``rows`` (found at ``where``, "file:row"), dropping exact repeats in place.

        Returns why the record clashes with an earlier one (same id, other content), or None.
        """
        hashed = {t: [(self._key(t, r), self._content(r)) for r in table_rows] for t, table_rows in rows.items()}
        own: dict[int, int] = {}  # this record's rows so far: two of them may share an id (an OASST tree's message_id)
        for table, pairs in hashed.items():
            for row, (key, content) in zip(rows[table], pairs, strict=True):
                prior = self.seen.get(key)
                if prior is not None and prior >> 64 != content:
                    return (f"{table} id {self._ids(table, row)} already produced by {self._where(prior & ((1 << 64) - 1))} with "
                            "different content (two records share an id: give them distinct ids, or drop one)")
                if own.setdefault(key, content) != content:
                    return (f"{table} id {self._ids(table, row)} is produced twice by this record with different content (two of its "
                            "parts share an id, such as two messages of a tree with one message_id): give them "
                            "distinct ids")
        at = self._at(where)
        for table, pairs in hashed.items():
            unique = []
            for row, (key, content) in zip(rows[table], pairs, strict=True):
                if key in self.seen:
                    skipped[f"{table} row identical to an earlier one"] += 1
                else:
                    self.seen[key] = content << 64 | at
                    unique.append(row)
            rows[table] = unique
        return None
