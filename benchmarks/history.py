"""Benchmark history: an SQLite store every ``edgemed bench`` run appends to.

Each run is one transaction, so a bench killed mid-way leaves the store as it was; a store that
fails SQLite's integrity check is refused (never silently emptied or recreated).
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from edgemed.errors import EdgemedError
from edgemed.paths import cache_dir

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    created TEXT NOT NULL,
    bundle_sha256 TEXT NOT NULL,
    model TEXT NOT NULL,
    artifact TEXT NOT NULL,
    backend TEXT NOT NULL,
    precision TEXT NOT NULL,
    device TEXT NOT NULL,
    scenario TEXT NOT NULL,
    versions TEXT NOT NULL,
    record TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS runs_key ON runs (model, artifact, backend, precision, device, scenario);
"""
KEY = ("bundle_sha256", "model", "artifact", "backend", "precision", "device", "scenario")


def default_path() -> Path:
    return cache_dir() / "history.sqlite"


class History:
    def __init__(self, path: str | Path | None = None, create: bool = True) -> None:
        self.path = Path(path) if path else default_path()
        if not self.path.exists() and not create:
            raise EdgemedError(f"history store {self.path} does not exist", "run edgemed bench --history first")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.db = sqlite3.connect(str(self.path), timeout=30)
            ok = self.db.execute("PRAGMA integrity_check").fetchone()[0]
            if ok != "ok":
                raise sqlite3.DatabaseError(ok)
            self.db.executescript(SCHEMA)
            cols = {r[1] for r in self.db.execute("PRAGMA table_info(runs)")}
            if not set(KEY) <= cols:
                raise sqlite3.DatabaseError("runs table lacks edgemed's columns")
        except sqlite3.DatabaseError as exc:
            raise EdgemedError(f"history store {self.path} is corrupt or not edgemed's ({exc})",
                               "move it aside and keep it for inspection; edgemed will not overwrite it") from exc

    def append(self, rows: list[dict]) -> None:
        """All rows of one bench run in one transaction."""
        with self.db:
            for r in rows:
                self.db.execute(
                    "INSERT INTO runs (created, bundle_sha256, model, artifact, backend, precision, device, scenario,"
                    " versions, record) VALUES (?,?,?,?,?,?,?,?,?,?)",
                    (r["created"], r["bundle_sha256"], r["model"], r["artifact"], r["backend"], r["precision"],
                     r["device"], r["scenario"], json.dumps(r.get("versions", {})), json.dumps(r["record"])))

    def runs(self) -> list[dict]:
        cur = self.db.execute("SELECT id, created, bundle_sha256, model, artifact, backend, precision, device, "
                              "scenario, versions, record FROM runs ORDER BY id")
        cols = [d[0] for d in cur.description]
        out = []
        for row in cur:
            item = dict(zip(cols, row))
            item["versions"], item["record"] = json.loads(item["versions"]), json.loads(item["record"])
            out.append(item)
        return out

    def close(self) -> None:
        self.db.close()
