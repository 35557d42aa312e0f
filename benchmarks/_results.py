"""Write a benchmark's JSON record under a time-stamped name that no other run can take (shared by the benchmarks)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any


def write_record(folder: Path, stem: str, record: dict[str, Any], *, indent: int = 1) -> Path:
    """Write ``record`` to ``folder/STEM_YYYYmmdd-HHMMSS.json``; ``-2``, ``-3``, ... when runs finish in the same second."""
    folder.mkdir(parents=True, exist_ok=True)
    base = f"{stem}_{time.strftime('%Y%m%d-%H%M%S')}"
    for n in range(1, 1000):
        path = folder / (f"{base}.json" if n == 1 else f"{base}-{n}.json")
        try:
            with path.open("x") as f:  # exclusive create: two processes never share a file
                f.write(json.dumps(record, indent=indent) + "\n")
        except FileExistsError:
            continue
        return path
    raise FileExistsError(f"no free result name for {base} in {folder}")
