"""Property tests of ``fuse`` (issue 21): any small input gives a clear error or a finite result of the right
shape, with NaN exactly where inputs are missing; never a crash or a silent NaN.

A tiny random-init PIF-Net per configuration keeps each example to a fraction of a second.
"""

from __future__ import annotations

import functools
import warnings
from dataclasses import dataclass

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pifnet_infer.config import PIFNetConfig
from pifnet_infer.errors import MissingDataWarning
from pifnet_infer.fusion import fuse
from pifnet_infer.models import PIFNet

pytestmark = pytest.mark.usefixtures("one_torch_thread")

DTYPES = ("float32", "float64", "float16", "int16", "uint16")


@functools.cache
def tiny(hsi_bands: int, msi_bands: int, ratio: int) -> PIFNet:
    config = PIFNetConfig(
        hsi_bands=hsi_bands, msi_bands=msi_bands, ratio=ratio, dim=4, d_state=2, expand=1, num_stages=1
    )
    return PIFNet(config).eval()


@dataclass(frozen=True)
class Scene:
    """A random small scene's recipe."""

    bands: int
    msi_bands: int
    ratio: int
    h: int
    w: int
    dtype: str
    layout: str
    seed: int
    nan_rate: float

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(lr, msi) CHW in the scene's dtype, and their masks of missing (NaN) values."""
        rng = np.random.default_rng(self.seed)
        lr = rng.random((self.bands, self.h, self.w))
        msi = rng.random((self.msi_bands, self.h * self.ratio, self.w * self.ratio))
        is_float = np.dtype(self.dtype).kind == "f"
        rate = self.nan_rate if is_float else 0.0
        lr_nan, msi_nan = rng.random(lr.shape) < rate, rng.random(msi.shape) < rate
        if is_float:
            lr[lr_nan], msi[msi_nan] = np.nan, np.nan
        else:
            lr, msi = np.round(lr * 10000), np.round(msi * 10000)
        return lr.astype(self.dtype), msi.astype(self.dtype), lr_nan, msi_nan


scenes = st.builds(
    Scene, bands=st.integers(1, 4), msi_bands=st.integers(1, 3), ratio=st.sampled_from((2, 4)),
    h=st.integers(1, 5), w=st.integers(1, 5), dtype=st.sampled_from(DTYPES), layout=st.sampled_from(("chw", "hwc")),
    seed=st.integers(0, 2**16), nan_rate=st.sampled_from((0.0, 0.0, 0.05, 0.3, 1.0)),
)  # fmt: skip


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenes)
def test_fuse_gives_a_clear_error_or_a_finite_result(scene: Scene) -> None:
    lr, msi, lr_nan, msi_nan = scene.arrays()
    if scene.layout == "hwc":
        lr, msi = lr.transpose(1, 2, 0), msi.transpose(1, 2, 0)
    scale = None if lr.dtype.kind == "f" else 1e-4
    model = tiny(scene.bands, scene.msi_bands, scene.ratio)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", MissingDataWarning)
            out = fuse(lr, msi, model, layout=scene.layout, scale=scale, progress=False)  # type: ignore[arg-type]
    except ValueError as err:  # the clear errors (ShapeMismatchError, ValueRangeError, ... are ValueErrors)
        message = str(err)
        assert message and "\n" not in message, message
        expected = (
            scene.h * scene.w == 1 or lr_nan.all() or msi_nan.reshape(scene.msi_bands, -1).all(axis=1).any()
        )
        assert expected, f"unexpected refusal: {message}"
        return
    out = np.asarray(out)
    out_chw = out if scene.layout == "chw" else out.transpose(2, 0, 1)
    r = scene.ratio
    assert out_chw.shape == (scene.bands, scene.h * r, scene.w * r) and out.dtype == np.float32
    missing = np.repeat(np.repeat(lr_nan, r, axis=1), r, axis=2) | msi_nan.any(axis=0)
    np.testing.assert_array_equal(np.isnan(out_chw), missing)  # NaN exactly where inputs are missing
    assert np.isfinite(out_chw[~missing]).all()
