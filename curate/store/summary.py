"""What a store holds and whether it is intact, as methods of `Store` (a mixin over its environment, index and
physics): `info`, `verify`, `subset`, and the history of the commands that filled it (`log`)."""

from __future__ import annotations

import json
import time

import lmdb
import numpy as np

from diffcurate.common.errors import CheckError, InputError
from diffcurate.curate.store.env import begin, damaged
from diffcurate.curate.store.records import (
    decode_index,
    decode_record,
    encode_record,
    header_json,
    intact,
)


class Summary:
    def log(self, entry: dict) -> None:
        """Append an entry (a finished `generate` or `import`: what was asked, what it added, the command), stamped
        `finished` now, to the store's history: provenance for `info` and the dataset card, and how a re-run of a
        finished `generate` knows without starting Ray that nothing is missing (samples are never removed or
        moved)."""
        entry = {**entry, "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        with begin(self.env, write=True) as txn:
            raw = txn.get(b"history", db=self._meta)
            history = (json.loads(bytes(raw)) if raw is not None else []) + [entry]
            txn.put(b"history", json.dumps(history).encode(), db=self._meta)
        self.meta["history"] = history

    def history(self) -> list[dict]:
        """The `log` entries, oldest first."""
        return list(self.meta.get("history", []))

    def subset(self, split: str, fraction: float, seed: int = 0) -> list[str]:
        """A train subset of round(fraction * N) ids; subsets of one seed are nested (1.25 % within 2.5 % ...).

        Each stratum's ids are shuffled (seeded) and dealt round-robin across strata, so every prefix holds
        equal numbers per stratum until a stratum runs out. Ids are sorted first: the result
        depends only on the store's content and the seed, not on insertion order."""
        if not 0 < fraction <= 1:
            raise InputError(f"fraction must be in (0, 1], got {fraction}")
        df = self.index()
        df = df[df["split"] == split].sort_values("id")
        if df.empty:
            return []
        rng = np.random.default_rng(seed)
        ranked = []
        for _, g in df.groupby("stratum", sort=True):
            perm = rng.permutation(len(g))
            ranked += [(r, rng.random(), i) for r, i in enumerate(g["id"].to_numpy()[perm])]
        order = [i for _, _, i in sorted(ranked)]
        m = max(1, int(round(fraction * len(order))))
        return order[:m]

    def damaged_records(self) -> list[str]:
        """The ids of the records that fail their checksum: a read of every record's bytes, no decoding, so that a
        command finds damage before it relies on the records (`info`, the start of a run)."""
        out = []
        with begin(self.env, buffers=True) as txn:
            try:
                out = [bytes(k).decode(errors="replace") for k, v in txn.cursor(db=self._samples) if not intact(v)]
            except lmdb.Error as e:
                raise damaged(self.path, e) from None
        return out

    def repair(self) -> tuple[list[str], list[str]]:
        """Re-solve every record that fails its checksum from the configuration its index entry holds, and write it
        back with the same header (the id, split and provenance stay): (ids repaired, lines for what could not be,
        a record whose index entry is damaged too). One transaction: all repairs or none."""
        headers, cannot = [], []
        with begin(self.env, buffers=True) as txn:
            for key in self.damaged_records():
                raw = txn.get(key.encode(), db=self._index)
                try:
                    h = decode_index(raw, key) if raw is not None else None
                except (CheckError, ValueError):
                    h = None
                if h is None or self._id_of(h) != key:
                    cannot.append(f"record {key}: its index entry is missing or damaged too; it cannot be re-solved")
                else:
                    headers.append(h)
        if headers:
            y = self.problem.solve(self.physics, self.configs_of(headers))[:, 0]  # (n, H, W) float32
            buf = bytearray()
            with begin(self.env, write=True) as txn:
                for h, field in zip(headers, y, strict=True):
                    with encode_record(h, field, self.encoding, buf) as rec:
                        txn.put(h["id"].encode(), rec, db=self._samples)
        return [h["id"] for h in headers], cannot

    def info(self) -> dict:
        """The `curate info --json` object (docs/formats.md), plus preset, encoding, created, command and history."""
        df = self.index()
        damaged = list(self.damaged)
        bad_records = self.damaged_records()

        def counts(col: str) -> dict:
            return {str(k): int(v) for k, v in df[col].value_counts().sort_index().items()}

        with begin(self.env) as txn:
            psize = txn.stat(self._samples)["psize"]
        return {
            "physics": self.problem.params_to_dict(self.physics),
            "problem": self.problem_record,
            "stratum": self.problem.stratum,
            "schema_version": int(self.meta["schema_version"]),
            "count": len(df),
            "by_split": counts("split"),
            "by_stratum": counts("stratum"),
            "by_round": counts("round"),
            "by_sampler": counts("sampler"),
            "bytes": int((self.env.info()["last_pgno"] + 1) * psize),
            "preset": self.meta.get("preset", ""),
            "encoding": self.encoding,
            "created": self.meta.get("created", ""),
            "command": self.meta.get("command", ""),
            "history": self.history(),
            **({"damaged": damaged} if damaged else {}),  # index entries skipped: run `curate verify`
            **({"damaged_records": bad_records} if bad_records else {}),  # ids of records failing their checksum
        }

    def verify(self) -> list[str]:
        """Every problem found: bad checksums, undecodable records, ids that do not match their config,
        index entries that disagree with their records. Empty means the store is sound."""
        problems: list[str] = []
        self.bad_ids: set[str] = set()  # ids of records with a problem (not to be re-solved)
        try:
            self._verify(problems, self.problem.grid(self.physics))
        except lmdb.Error as e:  # damaged B-tree pages: the walk cannot go on, but what it found stays
            problems.append(f"LMDB: the store's pages are damaged ({e})")
        return problems

    def _id_of(self, header: dict) -> str:
        """The id the problem gives a record's configuration (a bad configuration: InputError)."""
        return self.problem.sample_ids(self.physics, self.configs_of([header]))[0]

    def _verify(self, problems: list[str], grid: tuple[int, int]) -> None:
        with begin(self.env, buffers=True) as txn:
            seen = set()
            n_before = len(problems)
            for k, v in txn.cursor(db=self._samples):
                key = bytes(k).decode(errors="replace")
                seen.add(key)
                try:
                    h, y = decode_record(v, key)
                    if h["id"] != key or self._id_of(h) != key:
                        problems.append(f"record {key}: id does not match its configuration")
                    if y.shape != grid:
                        problems.append(f"record {key}: shape {y.shape} is not {grid}")
                    idx = txn.get(k, db=self._index)
                    if idx is None:
                        problems.append(f"record {key}: missing from the index")
                    elif (decode_index(idx, key) is None) or bytes(idx[:-4]) != header_json(v):
                        problems.append(f"record {key}: index entry disagrees with the record")
                except CheckError as e:
                    problems.append(str(e))
                except (KeyError, TypeError, ValueError, InputError) as e:
                    problems.append(f"record {key}: undecodable ({e})")
                if len(problems) > n_before:
                    self.bad_ids.add(key)
                n_before = len(problems)
            for k, _ in txn.cursor(db=self._index):
                if bytes(k).decode(errors="replace") not in seen:
                    problems.append(f"index entry {bytes(k).decode(errors='replace')}: no record")
