"""Exception and warning classes of pifnet-infer.

Every exception derives from :class:`PifnetError` and from the builtin that
describes it best, so ``except ValueError`` keeps working for callers who do
not know this package.
"""

from __future__ import annotations


class PifnetError(Exception):
    """Base class of every error raised by pifnet-infer."""


class ShapeMismatchError(PifnetError, ValueError):
    """An array has the wrong number of dimensions, bands or pixels."""


class GridMismatchError(PifnetError, ValueError):
    """Two rasters do not share a CRS or their grids are not aligned."""


class WeightsNotFoundError(PifnetError, FileNotFoundError):
    """No weight of that name, or its file is neither bundled nor cached."""


class RasterReadError(PifnetError, OSError):
    """A raster cannot be opened or one of its windows cannot be read (missing driver, truncated or corrupt file)."""


class ChecksumMismatchError(PifnetError, OSError):
    """A weight file's sha256 differs from the manifest."""


class CheckpointMismatchError(PifnetError, ValueError):
    """A checkpoint's keys or shapes do not match the model configuration."""


class ManifestError(PifnetError, ValueError):
    """The weights manifest is not valid JSON or breaks a rule of ``weights_manifest.schema.json``."""


class SpectralCoverageError(PifnetError, ValueError):
    """The HSI wavelengths do not cover a band of a spectral response or a model's band grid."""


class MissingDependencyError(PifnetError, ImportError):
    """An optional dependency is needed for this call but is not installed."""


class BackendUnavailableError(PifnetError, RuntimeError):
    """A requested compute backend (triton, mamba, torchvision) cannot run here."""


class PifnetPerformanceWarning(UserWarning):
    """A run landed on a slow path that a different setting would avoid."""


class ValueRangeError(PifnetError, ValueError):
    """Input values far outside a weight's range, or a model output that is not finite or absurd (units/scale)."""


class MissingDataWarning(UserWarning):
    """Part of an input is missing (a band without any valid pixel) and stays missing in the output."""
