"""The per-iteration training log: named loss terms as JSON lines in ``<model>/train_log.jsonl``."""
from __future__ import annotations

import json
import os
from typing import Dict

LOG_FILE = "train_log.jsonl"


class TrainLog:
    """Appends one JSON object per logged iteration; a fresh run (``resume`` False) truncates."""

    def __init__(self, model_path: str, resume: bool):
        self.path = os.path.join(model_path, LOG_FILE)
        os.makedirs(model_path, exist_ok=True)
        self._f = open(self.path, "a" if resume else "w", encoding="utf-8")

    def write(self, record: Dict) -> None:
        self._f.write(json.dumps(record) + "\n")
        self._f.flush()

    def close(self) -> None:
        self._f.close()


def read_log(model_path: str) -> list:
    with open(os.path.join(model_path, LOG_FILE), encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]
