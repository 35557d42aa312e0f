"""Import optional dependencies without letting them break the package.

PyPI torchvision raises ``RuntimeError`` at import beside a CPU-only torch, and a
mamba-ssm built against another torch raises ``ImportError: undefined symbol``.
Both mean "not available": any exception at import is caught, logged at DEBUG
and cached.
"""

from __future__ import annotations

import functools
import importlib
import logging
from types import ModuleType

from pifnet_infer.errors import MissingDependencyError

_logger = logging.getLogger(__name__)


@functools.cache
def try_import(module: str) -> ModuleType | None:
    """Return the imported module, or ``None`` if importing it raised anything."""
    try:
        return importlib.import_module(module)
    except Exception as err:
        _logger.debug("optional module %s unavailable: %s: %s", module, type(err).__name__, err)
        return None


def require(module: str, *, pip_name: str | None = None, extra: str | None = None) -> ModuleType:
    """Import ``module`` or raise :class:`MissingDependencyError` naming the install command."""
    mod = try_import(module)
    if mod is None:
        target = f'"pifnet-infer[{extra}]"' if extra else (pip_name or module)
        raise MissingDependencyError(
            f"{module!r} is required for this feature but could not be imported; "
            f"install it with: pip install {target}"
        )
    return mod
