"""The package's one progress-bar wrapper (tqdm.auto).

Bars are shown when ``progress=True`` unless ``PIFNET_DISABLE_PROGRESS_BARS=1``
is set; the variable is read at call time.
"""

from __future__ import annotations

import os
from typing import Any

from tqdm.auto import tqdm


def progress_disabled_by_env() -> bool:
    """True when ``PIFNET_DISABLE_PROGRESS_BARS`` is set to a true value."""
    return os.environ.get("PIFNET_DISABLE_PROGRESS_BARS", "").strip().lower() in {"1", "true", "yes", "on"}


def progress_bar(total: int, *, enabled: bool = True, desc: str | None = None, **kwargs: Any) -> tqdm:
    """Return a tqdm bar over ``total`` items, disabled when asked to be."""
    return tqdm(total=total, desc=desc, disable=not enabled or progress_disabled_by_env(), **kwargs)
