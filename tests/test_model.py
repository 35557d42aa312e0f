"""The model against the official layout (spec section 9) and the official forward (golden file)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from pifnet_infer.config import PRESETS, PIFNetConfig, get_preset
from pifnet_infer.errors import ShapeMismatchError
from pifnet_infer.models import PIFNet
from pifnet_infer.models.blocks import dilated_depthwise

GOLDEN = Path(__file__).parent / "data" / "official_golden_tiny.safetensors"


def official_table(C: int, c: int, D: int = 64) -> dict[str, tuple[int, ...]]:
    """The state_dict of the official model, written out from spec section 9 (independent of our code)."""
    d, K, N, R = 2 * D, 8 * D, 16, -(-D // 16)
    t: dict[str, tuple[int, ...]] = {
        "hsi_head.net.0.weight": (D, C, 3, 3), "hsi_head.net.0.bias": (D,),
        "hsi_head.net.2.weight": (D, D, 3, 3), "hsi_head.net.2.bias": (D,),
        "msi_head.net.0.weight": (D, c, 3, 3), "msi_head.net.0.bias": (D,),
        "msi_head.net.2.weight": (D, D, 3, 3), "msi_head.net.2.bias": (D,),
        "prior_conv.weight": (D, D, 3, 3), "prior_conv.bias": (D,),
        "tail.net.0.weight": (C, 2 * D, 3, 3), "tail.net.0.bias": (C,),
        "tail.net.2.weight": (C, C, 3, 3), "tail.net.2.bias": (C,),
        "conv_proj.weight": (D, 3 * D, 1, 1), "conv_proj.bias": (D,),
        "conv_proj_trans.weight": (3 * D, D, 1, 1), "conv_proj_trans.bias": (3 * D,),
    }  # fmt: skip
    for i in range(4):
        for j in range(3):
            p = f"inblocks.{i}.blocks.{j}."
            t |= {
                p + "A_log": (K, N), p + "D": (K,),
                p + "conv2d.weight": (d, 1, 3, 3), p + "conv2d.bias": (d,),
                p + "in_proj.weight": (2 * d, D), p + "in_proj.bias": (2 * d,),
                p + "delta_proj.weight": (K, R), p + "delta_proj.bias": (K,),
                p + "x_proj.weight": (R + 2 * N, K),
                p + "out_norm.weight": (d,), p + "out_norm.bias": (d,),
                p + "out_proj.weight": (D, d),
            }  # fmt: skip
        p = f"spatial_blocks.{i}."
        for n in range(1, 5):
            t |= {p + f"conv{n}.weight": (D, D, 1, 1), p + f"conv{n}.bias": (D,)}
            t |= {p + f"norm{n}.weight": (D,), p + f"norm{n}.bias": (D,)}
        t |= {
            p + "lka.dw_conv1.weight": (D, 1, 5, 5), p + "lka.dw_conv1.bias": (D,),
            p + "lka.dw_conv2.weight": (D, 1, 7, 7), p + "lka.dw_conv2.bias": (D,),
            p + "lka.pw_conv.weight": (D, D, 1, 1), p + "lka.pw_conv.bias": (D,),
            p + "se.fc.0.weight": (D // 4, D, 1, 1), p + "se.fc.0.bias": (D // 4,),
            p + "se.fc.2.weight": (D, D // 4, 1, 1), p + "se.fc.2.bias": (D,),
            p + "out_proj.weight": (D, D, 1, 1),
            p + "lora_A.weight": (D, D, 1, 1), p + "lora_B.weight": (D, D, 1, 1),
        }  # fmt: skip
        p = f"sem_blocks.{i}."
        for n in (1, 2):
            t |= {p + f"deform_conv{n}.weight": (D, D, 3, 3), p + f"deform_conv{n}.bias": (D,)}
            t |= {p + f"conv_offset{n}.weight": (18, D, 3, 3), p + f"conv_offset{n}.bias": (18,)}
    return t


# spec section 9, "Per configuration" table
OFFICIAL_PARAM_COUNTS = {
    "chikusei": 1_720_592,
    "chikusei-msi3": 1_720_016,
    "paviau": 1_625_367,
    "paviac": 1_625_367,
    "houston": 1_787_440,
    "cave": 1_413_399,
    "bayarea": 2_190_224,
    "santa": 2_190_224,
}


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_state_dict_matches_official_table(preset):
    cfg = PRESETS[preset]
    state = PIFNet(cfg).state_dict()
    expected = official_table(cfg.hsi_bands, cfg.msi_bands)
    assert len(state) == 310
    assert {k: tuple(v.shape) for k, v in state.items()} == expected
    assert sum(v.numel() for v in state.values()) == OFFICIAL_PARAM_COUNTS[preset]
    C, c = cfg.hsi_bands, cfg.msi_bands
    assert OFFICIAL_PARAM_COUNTS[preset] == 9 * C**2 + 1730 * C + 576 * c + 1_349_392
    assert not any(b for b in PIFNet(cfg).buffers())


def test_unused_official_modules_are_registered_but_frozen():
    model = PIFNet(get_preset("cave"))
    assert all(not blk.out_proj.weight.requires_grad for blk in model.spatial_blocks)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert trainable == 1_413_399 - 4 * 64 * 64  # spec: requires_grad=True count excludes out_proj


def _golden_model():
    with safe_open(GOLDEN, "pt") as f:
        config = PIFNetConfig(**json.loads(f.metadata()["config"]))
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    model = PIFNet(config).eval()
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("state.")}, strict=True)
    return model, tensors


def test_forward_matches_official_implementation():
    """The golden file holds random weights, inputs and the output of the official PIFNet.py (see its metadata)."""
    model, t = _golden_model()
    with torch.inference_mode():
        out = model(t["input.lr_hsi"], t["input.hr_msi"])
    torch.testing.assert_close(out, t["output"], rtol=1e-5, atol=2e-6)


def test_chikusei_preset_forward_64px():
    model = PIFNet(get_preset("chikusei")).eval()
    torch.manual_seed(0)
    with torch.inference_mode():
        out = model(torch.rand(1, 128, 16, 16), torch.rand(1, 4, 64, 64))
    assert out.shape == (1, 128, 64, 64)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("grad", [False, True])
def test_scan_backend_does_not_change_the_output(monkeypatch, grad):
    """The CPU scan backends (loop, chosen automatically, and the torch reference) give the same model,
    forward and (fp64) gradients."""
    model = PIFNet(PIFNetConfig(hsi_bands=8, msi_bands=3, ratio=4, dim=16))
    torch.manual_seed(0)
    lr, msi = torch.rand(2, 8, 6, 5), torch.rand(2, 3, 24, 20)
    if grad:
        model, lr, msi = model.double(), lr.double(), msi.double()
    results = []
    for backend in ("loop", "torch"):
        monkeypatch.setenv("PIFNET_SCAN_BACKEND", backend)
        model.zero_grad()
        with torch.set_grad_enabled(grad):
            out = model(lr, msi)
        if grad:
            out.square().mean().backward()
            results.append([p.grad.clone() for p in model.parameters() if p.grad is not None])
        results.append([out.detach()])
    for ours, ref in zip(results[: len(results) // 2], results[len(results) // 2 :], strict=True):
        for a, b in zip(ours, ref, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-10 if grad else 1e-5, atol=1e-12 if grad else 1e-6)


@pytest.mark.parametrize(("height", "width"), [(1, 1), (5, 7), (9, 9), (16, 13)])
@pytest.mark.parametrize(("kernel", "dilation"), [(7, 3), (3, 2)])
def test_dilated_depthwise_matches_the_dilated_conv(height, width, kernel, dilation):
    conv = torch.nn.Conv2d(
        4, 4, kernel, padding=dilation * (kernel // 2), dilation=dilation, groups=4
    ).double()
    x = torch.randn(2, 4, height, width, dtype=torch.float64, requires_grad=True)
    ours, ref = dilated_depthwise(conv, x), conv(x)
    torch.testing.assert_close(ours, ref, rtol=1e-12, atol=1e-12)
    weight = torch.randn_like(ref)
    grads = [torch.autograd.grad((y * weight).sum(), (x, conv.weight, conv.bias)) for y in (ours, ref)]
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_inference_is_deterministic_on_cpu():
    model, t = _golden_model()
    with torch.inference_mode():
        a = model(t["input.lr_hsi"], t["input.hr_msi"])
        b = model(t["input.lr_hsi"], t["input.hr_msi"])
    assert torch.equal(a, b)


@pytest.mark.parametrize(("ratio", "lr_size"), [(3, (5, 7)), (2, (3, 4)), (4, (1, 1))])
def test_any_lr_size_works(ratio, lr_size):
    """Odd HR sizes (ratio 3, odd LR) are padded inside the wavelet transform and cropped back."""
    model = PIFNet(PIFNetConfig(hsi_bands=6, msi_bands=2, ratio=ratio, dim=16)).eval()
    h, w = lr_size
    with torch.inference_mode():
        out = model(torch.rand(1, 6, h, w), torch.rand(1, 2, ratio * h, ratio * w))
    assert out.shape == (1, 6, ratio * h, ratio * w)
    assert torch.isfinite(out).all()


class _Counting(PIFNet):
    calls = 0

    def forward(self, lr_hsi, hr_msi):  # count layer work after validation
        self.check_inputs(lr_hsi, hr_msi)
        type(self).calls += 1
        return super().forward(lr_hsi, hr_msi)


@pytest.mark.parametrize(
    ("lr", "msi", "error", "words"),
    [
        (torch.rand(1, 5, 4, 4), torch.rand(1, 2, 16, 16), ShapeMismatchError, ["5 bands", "hsi_bands=6"]),
        (torch.rand(1, 6, 4, 4), torch.rand(1, 3, 16, 16), ShapeMismatchError, ["3 bands", "msi_bands=2"]),
        (torch.rand(1, 6, 4, 4), torch.rand(1, 2, 12, 12), ShapeMismatchError, ["ratio 4", "imply ratio 3"]),
        (torch.rand(6, 4, 4), torch.rand(1, 2, 16, 16), ShapeMismatchError, ["4-D", "(6, 4, 4)"]),
        (
            torch.ones(1, 6, 4, 4, dtype=torch.int32),
            torch.rand(1, 2, 16, 16),
            ValueError,
            ["floating", "int32"],
        ),
        (torch.full((1, 6, 4, 4), float("nan")), torch.rand(1, 2, 16, 16), ValueError, ["lr_hsi", "NaN"]),
        (torch.rand(2, 6, 4, 4), torch.rand(1, 2, 16, 16), ShapeMismatchError, ["batch"]),
    ],
)
def test_bad_inputs_are_refused_before_any_layer_runs(lr, msi, error, words):
    model = _Counting(PIFNetConfig(hsi_bands=6, msi_bands=2, ratio=4, dim=16))
    _Counting.calls = 0
    with pytest.raises(error) as info:
        model(lr, msi)
    assert _Counting.calls == 0
    for word in words:
        assert word in str(info.value)
