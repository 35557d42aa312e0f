"""fuse(): kinds in/out, out=, layouts, units, nodata, input validation, batching, progress, official protocol."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from pifnet_infer.config import PIFNetConfig
from pifnet_infer.data import load_sample
from pifnet_infer.errors import ShapeMismatchError
from pifnet_infer.fusion import fuse
from pifnet_infer.models import PIFNet
from pifnet_infer.simulate import simulate_pair
from pifnet_infer.tiling import ArrayInput, ArraySink, ArraySource, TileGrid, Window, run_tiles
from pifnet_infer.tiling.grid import axis_origins

RATIO = 4


def sample_bands(bands: int, sample: str = "aviris_gatorsense_vi") -> np.ndarray:
    """Indices of ``bands`` bands spread evenly over a bundled sample (its first and last excluded)."""
    total = load_sample(sample).cube.shape[0]
    return np.linspace(0, total - 1, bands + 2).round().astype(int)[1:-1]


def simulated_scene(
    hr_shape: tuple[int, int], *, bands: int = 8, ratio: int = RATIO, sample: str = "aviris_gatorsense_vi"
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(reference [C, H, W], lr_hsi [C, H/r, W/r], hr_msi [3, H, W]), float32 reflectance in [0, 1].

    ``bands`` bands spread over a bundled sample, mirrored about its border up to ``hr_shape``; the
    LR-HSI is simulated with the official blur and decimation, the MSI by averaging three band groups.
    """
    cube = load_sample(sample).cube[sample_bands(bands, sample)]
    height, width = hr_shape
    reps = (0, 0), (0, max(0, height - cube.shape[1])), (0, max(0, width - cube.shape[2]))
    reference = np.clip(np.pad(cube, reps, mode="symmetric")[:, :height, :width], 0.0, 1.0)
    srf = np.zeros((3, bands))
    for i, group in enumerate(np.array_split(np.arange(bands), 3)):
        srf[i, group] = 1.0 / len(group)
    lr, msi = simulate_pair(reference, ratio, srf=srf, psf="official")
    return reference.astype(np.float32), lr, msi


def random_model(bands: int = 8, dim: int = 8, d_state: int = 8, seed: int = 0) -> PIFNet:
    """A random-init PIF-Net (no trained weights exist yet); narrow by default so CPU tests stay fast."""
    torch.manual_seed(seed)
    return PIFNet(PIFNetConfig(hsi_bands=bands, msi_bands=3, ratio=RATIO, dim=dim, d_state=d_state)).eval()


def whole(model: nn.Module, lr: np.ndarray, msi: np.ndarray) -> np.ndarray:
    """Whole-image inference, [C, H, W] float32."""
    with torch.inference_mode():
        return model(torch.from_numpy(lr)[None], torch.from_numpy(msi)[None])[0].numpy()


class CountingModel(nn.Module):
    """Wraps a model and counts forward calls (to prove errors come before any tile runs)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.config = model.config
        self.calls = 0

    def forward(self, lr: torch.Tensor, msi: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.model(lr, msi)


@pytest.fixture(scope="module")
def model() -> PIFNet:
    return random_model()


@pytest.fixture(scope="module")
def scene() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return simulated_scene((48, 40))  # LR 12 x 10


@pytest.fixture(scope="module")
def fused(model: PIFNet, scene: tuple[np.ndarray, ...]) -> np.ndarray:
    _, lr, msi = scene
    return fuse(lr, msi, model, tile_size=24, overlap=8, progress=False)


def test_numpy_in_numpy_out_close_to_whole_image(model, scene, fused) -> None:
    _, lr, msi = scene
    assert isinstance(fused, np.ndarray) and fused.dtype == np.float32 and fused.shape == (8, 48, 40)
    assert np.isfinite(fused).all()
    reference = whole(model, lr, msi)
    assert np.abs(fused - reference).mean() < 0.1 * np.abs(reference - reference.mean()).mean()


def test_one_tile_covering_the_scene_is_whole_image_inference(model) -> None:
    _, lr, msi = simulated_scene((40, 40))
    np.testing.assert_array_equal(fuse(lr, msi, model, tile_size=40, progress=False), whole(model, lr, msi))


def test_tensor_in_tensor_out(model, scene, fused) -> None:
    _, lr, msi = scene
    out = fuse(torch.from_numpy(lr), torch.from_numpy(msi), model, tile_size=24, overlap=8, progress=False)
    assert isinstance(out, torch.Tensor) and out.device.type == "cpu" and out.dtype == torch.float32
    np.testing.assert_array_equal(out.numpy(), fused)


def test_out_memmap_is_written_and_returned(model, scene, fused, tmp_path) -> None:
    _, lr, msi = scene
    out = np.lib.format.open_memmap(tmp_path / "out.npy", mode="w+", dtype=np.float32, shape=fused.shape)
    result = fuse(lr, msi, model, tile_size=24, overlap=8, progress=False, out=out)
    assert result is out
    del out, result
    np.testing.assert_array_equal(np.load(tmp_path / "out.npy"), fused)


def test_layout_hwc(model, scene, fused) -> None:
    _, lr, msi = scene
    out = fuse(
        lr.transpose(1, 2, 0).copy(),
        msi.transpose(1, 2, 0).copy(),
        model,
        tile_size=24,
        overlap=8,
        layout="hwc",
        progress=False,
    )
    assert out.shape == (48, 40, 8)
    np.testing.assert_allclose(out, fused.transpose(1, 2, 0), atol=1e-6)


def test_scaled_integers_round_trip(model, scene, fused) -> None:
    _, lr, msi = scene
    lr_dn, msi_dn = (np.round(a * 10000).astype(np.uint16) for a in (lr, msi))
    out = fuse(lr_dn, msi_dn, model, tile_size=24, overlap=8, scale=1e-4, progress=False)
    # returned in the input's units (DN); differs from the float run only by the input quantisation
    np.testing.assert_allclose(out * 1e-4, fused, atol=2e-3)
    assert np.abs(out * 1e-4 - fused).mean() < 2e-4


def test_manifest_input_range_is_applied_and_undone(scene) -> None:
    _, lr, msi = scene
    net = random_model()
    plain = fuse(2.0 * lr + 0.5, 2.0 * msi + 0.5, net, tile_size=24, overlap=8, progress=False)
    net.weight_entry = SimpleNamespace(input_range={"scale": 2.0, "offset": 0.5, "min": 0.5, "max": 2.5})
    ranged = fuse(lr, msi, net, tile_size=24, overlap=8, progress=False)
    np.testing.assert_allclose(ranged, (plain - 0.5) / 2.0, atol=1e-5)


def test_nan_and_nodata_are_filled_then_restored(model, scene) -> None:
    _, lr, msi = scene
    lr, msi = lr.copy(), msi.copy()
    lr[3, 2, 5] = np.nan  # one band of one LR pixel -> its 4x4 HR block
    msi[1, 30, 7] = np.nan  # one MSI pixel
    out = fuse(lr, msi, model, tile_size=24, overlap=8, progress=False)
    expected = np.zeros(out.shape, dtype=bool)
    expected[3, 8:12, 20:24] = True  # only the band that is missing in the LR-HSI
    expected[:, 30, 7] = True  # every band where the MSI is missing
    np.testing.assert_array_equal(np.isnan(out), expected)
    assert np.isnan(lr[3, 2, 5]), "the caller's array must not be modified"
    # integer input with a nodata value: same pixels get the nodata value back
    lr_dn, msi_dn = (np.nan_to_num(np.round(a * 1000), nan=-1).astype(np.int16) for a in (lr, msi))
    out_dn = fuse(lr_dn, msi_dn, model, tile_size=24, overlap=8, scale=1e-3, nodata=-1, progress=False)
    np.testing.assert_array_equal(out_dn == -1, expected)
    assert np.isfinite(out_dn).all()


def _bad_inputs(lr: np.ndarray, msi: np.ndarray) -> list[tuple[str, tuple, dict, type, str]]:
    t_lr, t_msi = torch.from_numpy(lr), torch.from_numpy(msi)
    inf = lr.copy()
    inf[0, 0, 0] = np.inf
    return [
        (
            "non-integer ratio",
            (lr, msi[:, :46]),
            {},
            ShapeMismatchError,
            r"imply r = 3\.833 x 4; the model has ratio 4",
        ),
        (
            "ratio of the shapes != model's",
            (lr, msi[:, ::2, ::2]),
            {},
            ShapeMismatchError,
            r"imply ratio 2 .* model has ratio 4",
        ),
        (
            "hsi band count",
            (lr[:7], msi),
            {},
            ShapeMismatchError,
            r"expects hsi_bands=8, msi_bands=3.*hsi_bands=7",
        ),
        (
            "msi band count",
            (lr, msi[:2]),
            {},
            ShapeMismatchError,
            r"msi_bands=3.*msi_bands=2.*entries that fit",
        ),
        ("empty", (lr[:, :0], msi[:, :0]), {}, ShapeMismatchError, "empty"),
        ("one pixel", (lr[:, :1, :1], msi[:, :4, :4]), {}, ShapeMismatchError, "single pixel"),
        (
            "integer without scale",
            ((lr * 1000).astype(np.uint16), msi),
            {},
            ValueError,
            "integer dtype uint16.*scale=",
        ),
        ("4-D", (lr[None], msi[None]), {}, ShapeMismatchError, "3-D.*batch axis"),
        (
            "hwc passed as chw",
            (lr.transpose(1, 2, 0), msi.transpose(1, 2, 0)),
            {},
            ShapeMismatchError,
            "layout='hwc'",
        ),
        ("infinite value", (inf, msi), {}, ValueError, "infinite"),
        ("bool dtype", (lr > 0, msi), {}, ValueError, "real numbers"),
        ("numpy and torch mixed", (lr, t_msi), {}, TypeError, "numpy arrays or both torch tensors"),
        ("devices differ", (t_lr.to("meta"), t_msi), {}, ValueError, "meta.*cpu.*same device|one device"),
        ("bad layout", (lr, msi), {"layout": "whc"}, ValueError, "layout"),
        ("tile not a multiple of 2r", (lr, msi), {"tile_size": 20}, ValueError, "multiple of 2\\*ratio=8"),
        ("overlap >= tile", (lr, msi), {"tile_size": 16, "overlap": 16}, ValueError, "overlap"),
        ("bad batch size", (lr, msi), {"batch_size": 0}, ValueError, "batch_size"),
        (
            "out of the wrong shape",
            (lr, msi),
            {"out": np.empty((8, 40, 48), np.float32)},
            ShapeMismatchError,
            r"out must have shape \(8, 48, 40\)",
        ),
        ("all pixels missing", (np.full_like(lr, np.nan), msi), {}, ValueError, "no valid pixel"),
    ]


@pytest.mark.parametrize("case", range(19))
def test_bad_input_raises_before_any_tile(model, scene, case) -> None:
    _, lr, msi = scene
    cases = _bad_inputs(lr, msi)
    assert len(cases) == 19
    name, args, kwargs, error, match = cases[case]
    counting = CountingModel(model)
    with pytest.raises(error, match=match):
        fuse(*args, counting, progress=False, **kwargs)
    assert counting.calls == 0, name


def test_auto_model_without_a_fitting_weight_lists_the_manifest(scene) -> None:
    _, lr, msi = scene
    with pytest.raises(
        ValueError,
        match=r"model='auto' needs exactly one manifest weight .*hsi_bands=8, msi_bands=3, ratio=4",
    ):
        fuse(lr, msi, progress=False)


def test_model_from_a_safetensors_path(scene, fused, tmp_path) -> None:
    from pifnet_infer.weights import save_weights

    _, lr, msi = scene
    path = save_weights(random_model(), tmp_path / "tiny.safetensors")
    np.testing.assert_array_equal(
        fuse(lr, msi, str(path), tile_size=24, overlap=8, device="cpu", progress=False), fused
    )


def test_diagnostics_use_the_manifest_spectral_responses(scene, fused) -> None:
    _, lr, msi = scene
    net = random_model()  # a stand-in entry: band centres 400-1000 nm under a synthetic RGB camera
    net.weight_entry = SimpleNamespace(
        input_range={"scale": 1.0, "offset": 0.0}, msi_srf="rgb_gaussian",
        hsi_wavelengths_nm=tuple(np.linspace(400, 1000, 8)), hsi_fwhm_nm=None,
    )  # fmt: skip
    out, report = fuse(lr, msi, net, tile_size=24, overlap=8, progress=False, return_diagnostics=True)
    np.testing.assert_array_equal(out, fused)
    assert report.spectral_error_map.shape == (12, 10) and report.spatial_error_map.shape == (48, 40)
    assert np.isfinite(report.spectral_rmse) and report.spectral_rmse > 0
    counting = CountingModel(random_model())  # no manifest entry: no spectral responses to check against
    with pytest.raises(ValueError, match="return_diagnostics=True needs"):
        fuse(lr, msi, counting, progress=False, return_diagnostics=True)
    assert counting.calls == 0


def test_output_does_not_depend_on_batch_size(model, scene, fused) -> None:
    _, lr, msi = scene
    for batch in (1, 4, 64):
        out = fuse(lr, msi, model, tile_size=24, overlap=8, batch_size=batch, progress=False)
        np.testing.assert_allclose(out, fused, atol=1e-5)


def test_progress_bar_and_callback(model, scene, monkeypatch, capsys) -> None:
    _, lr, msi = scene
    calls: list[tuple[int, int]] = []
    monkeypatch.delenv("PIFNET_DISABLE_PROGRESS_BARS", raising=False)
    fuse(lr, msi, model, tile_size=24, overlap=8, callback=lambda d, t: calls.append((d, t)))
    n = len(TileGrid((12, 10), RATIO, 24, 8))
    assert calls == [(i, n) for i in range(1, n + 1)]
    assert f"{n}/{n}" in capsys.readouterr().err
    fuse(lr, msi, model, tile_size=24, overlap=8, progress=False)
    assert f"{n}/{n}" not in capsys.readouterr().err


def test_official_protocol_is_reproduced_exactly(model) -> None:
    # spec section 12, written out by hand: 64-px tiles, stride 64, last tile flush, batch 1, overwrite
    _, lr, msi = simulated_scene((72, 136))  # origins 0, 8 and 0, 64, 72: flush last tiles on both axes
    canvas = np.zeros((8, 72, 136), dtype=np.float32)
    for i in axis_origins(72, 64, 64):
        for j in axis_origins(136, 64, 64):
            tile = whole(
                model, lr[:, i // 4 : (i + 64) // 4, j // 4 : (j + 64) // 4], msi[:, i : i + 64, j : j + 64]
            )
            canvas[:, i : i + 64, j : j + 64] = tile
    out = fuse(lr, msi, model, tile_size=64, overlap=0, batch_size=1, progress=False)
    np.testing.assert_array_equal(out, canvas)


@pytest.mark.parametrize(
    ("ratio", "hr_shape", "expected"),
    [
        (4, (256, 256), (128, 32)),
        (4, (1000, 40), (128, 32)),
        (4, (40, 24), (40, 8)),
        (3, (600, 600), (126, 30)),
        (8, (512, 512), (128, 32)),
    ],
)
def test_auto_tile_is_the_training_size_with_a_quarter_overlap(ratio, hr_shape, expected) -> None:
    from pifnet_infer.prepare import resolve_tiling

    assert resolve_tiling("auto", "auto", ratio, hr_shape) == expected


@pytest.mark.parametrize("layout", ["chw", "hwc"])
def test_scan_in_chunks_finds_missing_pixels_and_valid_means(monkeypatch, layout) -> None:
    from pifnet_infer.tiling import array_io

    monkeypatch.setattr(array_io, "_SCAN_CHUNK_ELEMENTS", 7)  # one row per chunk
    rng = np.random.default_rng(2)
    cube = rng.random((3, 9, 5))
    cube[1, 2, 3] = np.nan
    cube[0, 7, 0] = -1.0
    invalid = np.isnan(cube) | (cube == -1)
    array = cube if layout == "chw" else cube.transpose(1, 2, 0)
    result = array_io.scan_array(array, layout, -1.0, name="x")
    np.testing.assert_array_equal(result.invalid, invalid)  # per band
    np.testing.assert_allclose(result.fill, [band[~bad].mean() for band, bad in zip(cube, invalid)])
    assert array_io.scan_array(array, layout, None, name="x").invalid.sum() == 1  # NaN only
    assert array_io.scan_array(np.ones((2, 3, 3)), "chw", None, name="x").invalid is None


def test_mirror_padding_matches_numpy_symmetric() -> None:
    rng = np.random.default_rng(1)
    array = rng.random((2, 5, 3)).astype(np.float32)
    read = ArrayInput(array).read(Window(-7, -4, 20, 11))
    padded = np.pad(array, ((0, 0), (7, 8), (4, 4)), mode="symmetric")
    np.testing.assert_array_equal(read, padded)


def test_scene_smaller_than_the_tile(model) -> None:
    _, lr, msi = simulated_scene((24, 16))
    out = fuse(lr, msi, model, tile_size=32, overlap=8, progress=False)
    assert out.shape == (8, 24, 16) and np.isfinite(out).all()


class _RecordingSink(ArraySink):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.writes: list[tuple[int, int]] = []

    def write(self, hr_row0, rows) -> None:
        super().write(hr_row0, rows)
        self.writes.append((hr_row0, hr_row0 + rows.shape[1]))


def test_sink_receives_the_final_rows_of_each_tile_row_in_order(model) -> None:
    _, lr, msi = simulated_scene((160, 40))
    source = ArraySource(ArrayInput(lr), ArrayInput(msi), RATIO)
    sink = _RecordingSink(None, (8, 160, 40))
    run_tiles(model, source, sink, tile_size=32, overlap=8, progress=False)
    grid = TileGrid((40, 10), RATIO, 32, 8)
    ends = [grid.rows_final_after(r) for r in range(grid.n_rows)]
    assert sink.writes == list(zip([0, *ends[:-1]], ends))
    np.testing.assert_allclose(
        sink.out, fuse(lr, msi, model, tile_size=32, overlap=8, progress=False), atol=1e-6
    )


def test_sink_refuses_rows_out_of_order() -> None:
    sink = ArraySink(None, (2, 8, 4))
    sink.write(0, np.zeros((2, 3, 4), np.float32))
    with pytest.raises(RuntimeError, match="written while rows from 3"):
        sink.write(4, np.zeros((2, 4, 4), np.float32))
    with pytest.raises(RuntimeError, match="only HR rows < 3 of 8"):
        sink.close()


def _warnings(caplog) -> int:
    return sum(
        r.levelno == logging.WARNING and r.name == "pifnet_infer.tiling.runner" for r in caplog.records
    )


class _OutOfMemoryAbove(nn.Module):
    """Raises CUDA out-of-memory when a batch has more than ``limit`` HR pixels (simulated on CPU)."""

    def __init__(self, model: nn.Module, limit: int) -> None:
        super().__init__()
        self.model, self.config, self.limit = model, model.config, limit

    def forward(self, lr: torch.Tensor, msi: torch.Tensor) -> torch.Tensor:
        if msi.shape[0] * msi.shape[-1] * msi.shape[-2] > self.limit:
            raise torch.cuda.OutOfMemoryError("simulated")
        return self.model(lr, msi)


def test_out_of_memory_halves_batch_then_tile_and_logs_once(model, scene, caplog) -> None:
    _, lr, msi = scene
    caplog.set_level(logging.DEBUG, logger="pifnet_infer.tiling.runner")
    # batch: 4 tiles of 24^2 do not fit, 2 do -> same result as batch 2
    out = fuse(
        lr, msi, _OutOfMemoryAbove(model, 2 * 24 * 24), tile_size=24, overlap=8, batch_size=4, progress=False
    )
    np.testing.assert_allclose(out, fuse(lr, msi, model, tile_size=24, overlap=8, progress=False), atol=1e-5)
    assert _warnings(caplog) == 1
    # tile: one 32-px tile does not fit -> 16-px tiles, still a finite, complete result near whole-image
    caplog.clear()
    out = fuse(
        lr, msi, _OutOfMemoryAbove(model, 16 * 16), tile_size=32, overlap=8, batch_size=2, progress=False
    )
    assert np.isfinite(out).all()
    reference = whole(model, lr, msi)
    assert np.abs(out - reference).mean() < 0.2 * np.abs(reference - reference.mean()).mean()
    assert _warnings(caplog) == 1
    assert any("tile size halved to 16" in r.getMessage() for r in caplog.records)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_tensors_in_and_out_match_cpu(scene, fused) -> None:
    _, lr, msi = scene
    net = random_model().cuda()
    lr_t, msi_t = torch.from_numpy(lr).cuda(), torch.from_numpy(msi).cuda()
    out = fuse(lr_t, msi_t, net, tile_size=24, overlap=8, batch_size=3, dtype="float32", progress=False)
    assert out.device.type == "cuda"
    np.testing.assert_allclose(out.cpu().numpy(), fused, atol=1e-4)
    half = fuse(lr_t, msi_t, net, tile_size=24, overlap=8, progress=False)  # auto: bf16 autocast, auto batch
    assert np.abs(half.cpu().numpy() - fused).mean() < 1e-2
