"""Reading a built data set's folder: its JSON-lines files, a file's digest, a row's collection.

Shared by the data card (``card.py``) and the baselines that compute features on a build
(``mmengine.features.data_baselines``). A module of its own so that the baselines read a build
without importing the card, whose command line runs them (no import circle).
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import List


def _read_jsonl(path: Path) -> List[dict]:
    if not path.exists():
        return []
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def _collection(row: dict) -> str:
    return row["source"].split("/")[0]
