"""One backend selector for every op that has several implementations.

Each op (the selective scan, the deformable convolution) owns a :class:`BackendRegistry` listing its
:class:`Backend` s from fastest to slowest; the last one is the pure-PyTorch reference. A call picks its
backend in this order:

1. the ``backend=`` argument of the op (``"auto"`` or ``None`` means "not given"),
2. the op's environment variable (``PIFNET_SCAN_BACKEND``, ``PIFNET_DEFORM_BACKEND``), read at call time,
3. automatically: the first backend, fastest first, that is available, runs on the tensor's device and
   is allowed to be picked automatically there (the triton interpreter is never picked for CPU tensors).

A named backend that is unknown, unavailable or unable to run on the tensor's device raises
:class:`~pifnet_infer.errors.BackendUnavailableError`; there is no silent fallback. Automatic choices are
logged once per (op, backend, device type) at INFO, and a CUDA run that lands on the reference emits
:class:`~pifnet_infer.errors.PifnetPerformanceWarning` once per op.

.. versionadded:: 0.1
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from pifnet_infer._utils.optional import try_import
from pifnet_infer.errors import BackendUnavailableError, PifnetPerformanceWarning

_logger = logging.getLogger(__name__)

Probe = Callable[[], "str | None"]


@dataclass(frozen=True)
class Backend:
    """One implementation of an op.

    Attributes:
        name: what users pass as ``backend=`` or in the environment variable.
        load: imports the implementation (lazily) and returns the function to call.
        probe: ``None`` when the backend can run in this process, else why not; called once, then cached
            by the registry.
        supports: whether the backend runs on tensors of this device, checked at every call (it may read
            environment variables such as ``TRITON_INTERPRET``).
        auto_devices: device types on which automatic selection may pick this backend (``None``: any).
        dtypes: input dtypes it accepts (``None``: any).
        differentiable: whether the implementation supports autograd.
    """

    name: str
    load: Callable[[], Callable[..., Any]]
    probe: Probe
    supports: Callable[[torch.device], bool]
    auto_devices: frozenset[str] | None
    dtypes: frozenset[torch.dtype] | None = None
    differentiable: bool = True

    def is_supported(self, tensor: torch.Tensor) -> bool:
        """Whether this backend runs on ``tensor``'s device and dtype."""
        return self.supports(tensor.device) and (self.dtypes is None or tensor.dtype in self.dtypes)


class BackendRegistry:
    """The backends of one op, fastest first, with the selection rules of this module.

    Args:
        op: name of the op, used in messages (``"selective_scan"``).
        env_var: environment variable that names a backend for this op.
        backends: implementations, fastest first; the last one is the reference.
    """

    def __init__(self, op: str, env_var: str, backends: Sequence[Backend]) -> None:
        self.op = op
        self.env_var = env_var
        self._backends = {backend.name: backend for backend in backends}
        self._reasons: dict[str, str | None] = {}
        self._logged: set[tuple[str, str]] = set()
        self._warned: set[str] = set()

    @property
    def names(self) -> list[str]:
        """All registered backend names, fastest first."""
        return list(self._backends)

    def reason(self, name: str) -> str | None:
        """Why backend ``name`` cannot run in this process (``None`` when it can); probed once."""
        if name not in self._reasons:
            try:
                reason = self._backends[name].probe()
            except Exception as err:  # a probe that fails in any way means "unavailable"
                reason = f"its availability probe raised {type(err).__name__}: {err}"
            if reason is not None:
                _logger.debug("%s backend %r unavailable: %s", self.op, name, reason)
            self._reasons[name] = reason
        return self._reasons[name]

    def available(self) -> list[str]:
        """Names of the backends whose dependencies import here, fastest first (device not considered)."""
        return [name for name in self._backends if self.reason(name) is None]

    def select(
        self, tensor: torch.Tensor, backend: str | None = None, *, needs_grad: bool = False
    ) -> Backend:
        """Pick the backend for a call whose main input is ``tensor``.

        Args:
            tensor: the op's main input; only its device and dtype are read.
            backend: a backend name, or ``None``/``"auto"`` to use the environment variable or choose.
            needs_grad: the call must support autograd (forward-only backends are refused or skipped).

        Raises:
            BackendUnavailableError: the named backend is unknown, unavailable, unable to run on the
                tensor's device, or forward-only while gradients are needed.
        """
        requested, source = backend, "the backend= argument"
        if requested is None or requested == "auto":
            requested, source = os.environ.get(self.env_var, "").strip(), f"${self.env_var}"
        if requested and requested != "auto":
            return self._named(requested, source, tensor, needs_grad)
        return self._automatic(tensor, needs_grad)

    def _named(self, name: str, source: str, tensor: torch.Tensor, needs_grad: bool) -> Backend:
        chosen = self._backends.get(name)
        can = [b.name for b in self._backends.values() if self._usable(b, tensor, needs_grad)]
        fix = f"Fix: pass backend= or set ${self.env_var} to 'auto' or to one of {can}"
        if chosen is None:
            raise BackendUnavailableError(
                f"unknown {self.op} backend {name!r} (from {source}); expected one of {self.names}. {fix}"
            )
        reason = self._why_not(chosen, tensor, needs_grad)
        if reason is not None:
            raise BackendUnavailableError(f"{self.op} backend {name!r} (from {source}) {reason}. {fix}")
        return chosen

    def _usable(self, backend: Backend, tensor: torch.Tensor, needs_grad: bool) -> bool:
        return self._why_not(backend, tensor, needs_grad) is None

    def _why_not(self, backend: Backend, tensor: torch.Tensor, needs_grad: bool) -> str | None:
        """Why ``backend`` cannot take this call (a predicate for the backend's name), or ``None``."""
        reason = self.reason(backend.name)
        if reason is not None:
            return f"is not available: {reason}"
        if not backend.is_supported(tensor):
            return f"does not run on {tensor.device.type} {tensor.dtype} tensors"
        if needs_grad and not backend.differentiable:
            return "is forward-only but gradients are required (run inference under torch.inference_mode())"
        return None

    def _automatic(self, tensor: torch.Tensor, needs_grad: bool) -> Backend:
        device = tensor.device.type
        candidates = [
            b for b in self._backends.values() if b.auto_devices is None or device in b.auto_devices
        ]
        chosen = next((b for b in candidates if self._usable(b, tensor, needs_grad)), None)
        if chosen is None:
            raise BackendUnavailableError(
                f"no {self.op} backend runs on {device} {tensor.dtype} tensors (registered: {self.names}); "
                f"move the input to the CPU or a CUDA device"
            )
        if (device, chosen.name) not in self._logged:
            self._logged.add((device, chosen.name))
            _logger.info(
                "%s: using backend %r for %s tensors (automatic; override with backend= or $%s)",
                self.op,
                chosen.name,
                device,
                self.env_var,
            )
        reference = self.names[-1]
        if (
            device == "cuda"
            and chosen.name == reference
            and len(candidates) > 1
            and self.op not in self._warned
        ):
            self._warned.add(self.op)
            skipped = "; ".join(
                f"{b.name} {self._why_not(b, tensor, needs_grad)}" for b in candidates if b.name != reference
            )
            warnings.warn(
                f"{self.op} runs on the slow {reference!r} backend on CUDA ({skipped}). "
                f'Install the fast path with: pip install "pifnet-infer[gpu]"',
                PifnetPerformanceWarning,
                stacklevel=4,
            )
        return chosen


def lazy(module: str, attr: str) -> Callable[[], Callable[..., Any]]:
    """A :attr:`Backend.load` that imports ``module`` on first use and returns its ``attr``."""

    def load() -> Callable[..., Any]:
        fn: Callable[..., Any] = getattr(importlib.import_module(module), attr)
        return fn

    return load


def import_probe(*modules: str, install: str) -> Probe:
    """A :attr:`Backend.probe` that requires every module in ``modules`` to import (via ``try_import``).

    The reason distinguishes "not installed" from "installed but failed to import"; the exception itself
    is logged at DEBUG by :mod:`pifnet_infer._utils.optional`.
    """

    def probe() -> str | None:
        for module in modules:
            if try_import(module) is not None:
                continue
            try:
                installed = importlib.util.find_spec(module.partition(".")[0]) is not None
            except (ImportError, ValueError):
                installed = False
            if installed:
                return (
                    f"{module!r} is installed but fails to import (the exception is logged at DEBUG by "
                    f"pifnet_infer._utils.optional; often a build for another torch or CUDA version)"
                )
            return f"{module!r} is not installed ({install})"
        return None

    return probe


def cuda_probe() -> str | None:
    """A probe for CUDA-only backends: ``None`` when a CUDA device is usable."""
    if torch.cuda.is_available():
        return None
    return f"no CUDA device (torch {torch.__version__}, CUDA build {torch.version.cuda or 'none'})"


def all_of(*probes: Probe) -> Probe:
    """A probe that reports the first reason among ``probes`` (each called in order until one fails)."""

    def probe() -> str | None:
        return next((reason for reason in (p() for p in probes) if reason is not None), None)

    return probe


#: op name -> its registry; filled by the op modules through :func:`register`
_REGISTRIES: dict[str, BackendRegistry] = {}


def register(registry: BackendRegistry) -> BackendRegistry:
    """Make ``registry`` visible to :func:`available_backends` and return it."""
    _REGISTRIES[registry.op] = registry
    return registry


def available_backends() -> dict[str, list[str]]:
    """Backends whose dependencies import in this process, per op, fastest first.

    Device support is checked per call: ``"triton"`` may be listed on a CPU-only machine, where it only
    runs under ``TRITON_INTERPRET=1`` (for tests).

    Returns:
        ``{"selective_scan": [...], "deform_conv2d": [...]}``; ``"torch"`` is always present.

    Example:
        >>> available_backends()["selective_scan"][-1]
        'torch'

    .. versionadded:: 0.1
    """
    return {op: registry.available() for op, registry in _REGISTRIES.items()}
