"""Backend selection: argument > environment variable > automatic; no silent fallback."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import warnings
from types import SimpleNamespace

import pytest
import torch

from pifnet_infer.errors import BackendUnavailableError, PifnetPerformanceWarning
from pifnet_infer.ops import available_backends, deform_conv2d, selective_scan
from pifnet_infer.ops.backend import Backend, BackendRegistry

ENV = "PIFNET_TEST_BACKEND"


def fake_tensor(device="cpu", dtype=torch.float32):
    """Selection reads only .device and .dtype, so CUDA can be simulated on a CPU-only machine."""
    return SimpleNamespace(device=torch.device(device), dtype=dtype)


def make_registry(*, fast_reason=None, calls=None):
    calls = calls if calls is not None else []

    def probe(name, reason):
        def run():
            calls.append(name)
            return reason

        return run

    def boom():
        raise RuntimeError("operator torchvision::nms does not exist")

    def impl(name):
        return lambda: lambda: name

    return BackendRegistry(
        "test_op",
        ENV,
        [
            Backend(
                "fast",
                impl("fast"),
                probe("fast", fast_reason),
                lambda d: d.type == "cuda",
                frozenset({"cuda"}),
                dtypes=frozenset({torch.float32}),
            ),
            Backend(
                "forward_only",
                impl("forward_only"),
                probe("forward_only", None),
                lambda d: d.type == "cuda",
                frozenset({"cuda"}),
                differentiable=False,
            ),
            Backend("crashing", impl("crashing"), boom, lambda d: True, frozenset({"cuda"})),
            Backend("ref", impl("ref"), probe("ref", None), lambda d: True, frozenset({"cpu", "cuda"})),
        ],
    )


@pytest.fixture(autouse=True)
def _no_env(monkeypatch):
    for var in (ENV, "PIFNET_SCAN_BACKEND", "PIFNET_DEFORM_BACKEND"):
        monkeypatch.delenv(var, raising=False)


def test_argument_beats_environment_beats_automatic(monkeypatch):
    registry = make_registry()
    cuda = fake_tensor("cuda")
    assert registry.select(cuda).name == "fast"
    monkeypatch.setenv(ENV, "ref")
    assert registry.select(cuda).name == "ref"  # read at call time, not at import
    assert registry.select(cuda, "forward_only").name == "forward_only"
    monkeypatch.setenv(ENV, "auto")
    assert registry.select(cuda, "auto").name == "fast"


def test_automatic_choice_depends_on_the_device_and_dtype():
    registry = make_registry()
    assert registry.select(fake_tensor("cpu")).name == "ref"
    assert registry.select(fake_tensor("cuda", torch.float64)).name == "forward_only"
    assert registry.select(fake_tensor("cuda"), needs_grad=True).name == "fast"
    with pytest.warns(PifnetPerformanceWarning):  # CUDA landing on the reference: see the test below
        assert registry.select(fake_tensor("cuda", torch.float64), needs_grad=True).name == "ref"


def test_unknown_backend_names_the_choices(monkeypatch):
    monkeypatch.setenv(ENV, "cudnn")
    with pytest.raises(
        BackendUnavailableError, match=r"unknown test_op backend 'cudnn' \(from \$PIFNET_TEST_BACKEND\)"
    ) as err:
        make_registry().select(fake_tensor())
    assert "['fast', 'forward_only', 'crashing', 'ref']" in str(err.value)


def test_unavailable_backend_raises_with_the_probe_reason_instead_of_falling_back():
    registry = make_registry(fast_reason="the compiled kernel is missing")
    with pytest.raises(BackendUnavailableError) as err:
        registry.select(fake_tensor("cuda"), "fast")
    message = str(err.value)
    assert "'fast' (from the backend= argument) is not available: the compiled kernel is missing" in message
    assert "['forward_only', 'ref']" in message  # what can run this call instead
    with pytest.raises(BackendUnavailableError, match="probe raised RuntimeError: operator torchvision::nms"):
        registry.select(fake_tensor("cuda"), "crashing")


def test_backend_on_the_wrong_device_or_dtype_or_without_autograd_is_refused():
    registry = make_registry()
    with pytest.raises(
        BackendUnavailableError, match=r"does not run on cpu torch.float32 tensors\. .* \['ref'\]"
    ):
        registry.select(fake_tensor("cpu"), "fast")
    with pytest.raises(BackendUnavailableError, match=r"cuda torch\.float64"):
        registry.select(fake_tensor("cuda", torch.float64), "fast")
    with pytest.raises(BackendUnavailableError, match=r"forward-only but gradients are required"):
        registry.select(fake_tensor("cuda"), "forward_only", needs_grad=True)


def test_probes_run_once():
    calls = []
    registry = make_registry(calls=calls)
    for _ in range(3):
        registry.select(fake_tensor("cuda"))
        registry.available()
    assert sorted(calls) == ["fast", "forward_only", "ref"]


def test_automatic_choice_is_logged_once_per_backend_and_device(caplog):
    registry = make_registry()
    with caplog.at_level(logging.INFO, logger="pifnet_infer.ops.backend"):
        for _ in range(3):
            registry.select(fake_tensor("cpu"))
            registry.select(fake_tensor("cuda"))
    messages = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert len(messages) == 2
    assert "test_op: using backend 'ref' for cpu tensors" in messages[0]
    assert "'fast' for cuda" in messages[1]


def test_cuda_run_on_the_reference_warns_once():
    registry = make_registry(fast_reason="triton is not installed")
    expected = (
        "slow 'ref' backend on CUDA .*fast is not available: triton is not installed; forward_only is forw"
    )
    with pytest.warns(PifnetPerformanceWarning, match=expected):
        assert registry.select(fake_tensor("cuda", torch.float64), needs_grad=True).name == "ref"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        registry.select(fake_tensor("cuda", torch.float64), needs_grad=True)
        registry.select(fake_tensor("cpu"))  # the reference is the right choice on the CPU: no warning


def test_real_ops_list_torch_last():
    backends = available_backends()
    assert set(backends) == {"selective_scan", "deform_conv2d"}
    assert all(names[-1] == "torch" for names in backends.values())


def test_real_ops_honour_the_environment(monkeypatch):
    u = torch.randn(1, 2, 5)
    args = (u, torch.rand(1, 2, 5), -torch.rand(2, 3), torch.randn(1, 3, 5), torch.randn(1, 3, 5))
    monkeypatch.setenv("PIFNET_SCAN_BACKEND", "torch")
    assert selective_scan(*args).shape == (1, 2, 5)
    monkeypatch.setenv("PIFNET_SCAN_BACKEND", "cuda_magic")
    with pytest.raises(BackendUnavailableError, match=r"'cuda_magic' \(from \$PIFNET_SCAN_BACKEND\)"):
        selective_scan(*args)
    x = torch.randn(1, 2, 4, 4)
    monkeypatch.setenv("PIFNET_DEFORM_BACKEND", "torchvision")
    if torch.cuda.is_available():
        pytest.skip("the refusal below needs a machine without CUDA")
    with pytest.raises(BackendUnavailableError, match="torchvision"):
        deform_conv2d(x, torch.zeros(1, 18, 4, 4), torch.randn(3, 2, 3, 3))


@pytest.mark.skipif(torch.cuda.is_available(), reason="on CUDA the mamba backend may exist")
def test_fast_scan_backends_are_refused_on_this_cpu_machine():
    u = torch.randn(1, 2, 5)
    args = (u, torch.rand(1, 2, 5), -torch.rand(2, 3), torch.randn(1, 3, 5), torch.randn(1, 3, 5))
    with pytest.raises(BackendUnavailableError, match=r"'mamba'.*(selective_scan_cuda|no CUDA device)"):
        selective_scan(*args, backend="mamba")
    if os.environ.get("TRITON_INTERPRET") != "1":  # with it, triton runs on the CPU (tests only)
        with pytest.raises(BackendUnavailableError, match="'triton'"):
            selective_scan(*args, backend="triton")


def test_cpu_ops_import_no_optional_dependency():
    code = (
        "import sys, torch\n"
        "from pifnet_infer.ops import selective_scan, deform_conv2d, cross_scan, cross_merge\n"
        "u = torch.randn(1, 4, 9)\n"
        "selective_scan(u, u.abs(), -torch.ones(4, 2), torch.randn(1, 2, 9), torch.randn(1, 2, 9))\n"
        "deform_conv2d(torch.randn(1, 2, 3, 3), torch.zeros(1, 18, 3, 3), torch.randn(2, 2, 3, 3))\n"
        "print(sorted(m for m in ('triton', 'mamba_ssm', 'selective_scan_cuda', 'torchvision') if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
