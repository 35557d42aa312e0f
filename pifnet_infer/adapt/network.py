"""Scene-adaptive PIF-Net: train (or fine-tune) a network on the user's own image pair.

The scene holds a training pair (Wald protocol): the LR-HSI and the HR-MSI degraded once more by
the ratio, with the original LR-HSI as the target. :func:`adapt` trains on random crops of that
reduced-resolution pair (L1 loss) plus, at full scale, the two consistency losses that need no
reference: the output blurred and decimated must give back the LR-HSI (``|D(X) - lr|``), and
projected through the SRF it must give back the HR-MSI (``|R X - msi|``). Early stopping watches a
held-out fifth of the reduced-resolution target plus the consistency of a fixed full-scale window
(a small scene's held-out part alone does not see the full-scale output degrade); the best state,
possibly the starting point, is returned. A time budget always stops training.

With a classical prior (the default when training from scratch), the network learns a correction:
the adapted model outputs ``prior(lr, msi) + network(lr, msi)``, the prior being GLP-HS refined for
consistency (:mod:`pifnet_infer.adapt.prior`), and the network's last layer starts at zero. The
starting point is then the refined classical fusion itself, and early stopping returns it unchanged
when no trained state does better on the held-out pixels. Measured on one CPU thread within 60 s
(``BENCHMARKS.md``, four scenes, Sentinel-2 MSI): on clean and noisy pairs the network alone ended
0.3-4.0 dB below GLP-HS and the adapted model 0.21-1.17 dB above it; the correction moved the prior by
-0.05 to 0.00 dB.

Starting points: a pretrained weight (body transferred, head and tail re-initialised when band
counts differ, see :mod:`pifnet_infer.adapt.init`), or with ``base=None`` a slim
PIF-Net sized for the device (without a prior, initialised to compute the PCA-projected bicubic
upsampling so that training starts from a sensible image). ``base="auto"`` takes a pretrained weight
only when its band counts equal the scene's: without a prior and with re-initialised head and tail, the
bundled weight ended 13-15 dB below the from-scratch start after 60 s on a CPU
(``benchmarks/results/bench_adapt_cpu_20261123-184547.json``).

.. versionadded:: 0.1
"""

from __future__ import annotations

import copy
import json
import logging
import math
import os
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from pifnet_infer._utils.device import resolve_device, resolve_dtype
from pifnet_infer._utils.progress import progress_bar
from pifnet_infer._utils.threads import cpu_threads
from pifnet_infer._version import __version__
from pifnet_infer.adapt.init import init_classical_start, transfer_weights, zero_output
from pifnet_infer.adapt.prior import ClassicalPrior
from pifnet_infer.adapt.scene import Scene, check_pair, check_wavelengths, prepare_scene, resolve_srf
from pifnet_infer.config import PIFNetConfig
from pifnet_infer.errors import ValueRangeError
from pifnet_infer.models import PIFNet
from pifnet_infer.priors.classical import fit_glp_hs
from pifnet_infer.priors.operators import BlurDecimate
from pifnet_infer.simulate import PSFArg

_logger = logging.getLogger(__name__)

#: steps for ``steps="auto"`` (early stopping and the time budget usually stop sooner)
AUTO_STEPS = 400
#: validation period (steps) and patience (validations without improvement)
EVAL_EVERY = 10
PATIENCE = 8
#: crops per step and the LR side of a crop
BATCH_CPU, BATCH_GPU = 8, 16
CROP_LR = 4
#: LR side of the central full-scale window whose consistency enters the validation score
VAL_WINDOW_LR = 32
#: weight of the full-scale consistency losses
CONSISTENCY_WEIGHT = 1.0
#: default learning rate (AdamW)
DEFAULT_LR = 3e-4


@dataclass
class AdaptHistory:
    """What happened during :func:`adapt`.

    Attributes:
        steps: optimisation steps taken.
        best_step: step of the returned weights (0: the starting point was never beaten).
        train_loss: total training loss of every step.
        val_steps, val_loss: validation score at each validation: held-out L1 of the reduced-resolution
            target plus the full-scale consistency L1 of a central window.
        stop_reason: ``"steps"``, ``"early_stopping"`` or ``"time_budget"``.
        seconds: wall time of the whole call.
        psf, srf: where they came from (``"given"``/``"estimated"``), and the pair residual.
    """

    steps: int = 0
    best_step: int = 0
    train_loss: list[float] = field(default_factory=list)
    val_steps: list[int] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    stop_reason: str = "steps"
    seconds: float = 0.0
    psf: str = ""
    srf: str = ""
    pair_residual: float = math.nan

    @property
    def best_val_loss(self) -> float:
        """Validation score of the returned weights (those of ``best_step``); NaN when never validated."""
        if self.best_step not in self.val_steps:
            return math.nan
        return self.val_loss[self.val_steps.index(self.best_step)]


class AdaptedModel(PIFNet):
    """A PIF-Net adapted to one scene: usable as ``fuse(..., model=adapted)`` or called directly.

    It is a :class:`~pifnet_infer.models.PIFNet` (same ``state_dict``), with ``weight_entry = None``
    (inputs are used in their own units), the training :attr:`history` and :attr:`provenance`. With a
    :attr:`prior`, its output is the prior's fusion plus the network's correction.

    .. versionadded:: 0.1
    """

    def __init__(self, config: PIFNetConfig, prior: ClassicalPrior | None = None) -> None:
        super().__init__(config)
        self.prior = prior
        self.weight_entry = None
        self.history = AdaptHistory()
        self.provenance: dict[str, Any] = {}

    def forward(self, lr_hsi: torch.Tensor, hr_msi: torch.Tensor) -> torch.Tensor:
        """Fuse a batch: the network's output, plus the prior's fusion when there is a prior."""
        out = self.network(lr_hsi, hr_msi)
        if self.prior is None:
            return out
        return out + self.prior(lr_hsi, hr_msi, self.config.ratio).to(out.dtype)

    def network(self, lr_hsi: torch.Tensor, hr_msi: torch.Tensor) -> torch.Tensor:
        """The PIF-Net alone (the correction, when there is a prior)."""
        return super().forward(lr_hsi, hr_msi)

    @classmethod
    def from_metadata(cls, config: PIFNetConfig, metadata: Mapping[str, str]) -> AdaptedModel:
        """An untrained model of the right kind for a file written by :meth:`save` (weights not loaded)."""
        record = json.loads(metadata["pifnet_infer.adapt"])
        prior = record.get("prior")
        model = cls(config, ClassicalPrior.from_record(prior) if prior else None)
        model.provenance = {k: v for k, v in record.items() if k not in ("history", "prior")}
        return model

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the weights as safetensors with the provenance in the metadata (``load_model`` reads it back).

        The metadata key ``"pifnet_infer.adapt"`` holds JSON: base weight, scene shape, ratio,
        PSF/SRF sources, steps, losses, time, seed, device and library version.

        Raises:
            ValueRangeError: the weights' validation loss is not finite (nothing is written).
        """
        from pifnet_infer.weights import save_weights

        best = self.history.best_val_loss
        if self.history.val_steps and not math.isfinite(best):
            raise ValueRangeError(
                f"refusing to save adapted weights whose validation loss is {best} (training diverged); the "
                "scene's values are likely in other units than the model's (reflectance in [0, 1]): rescale them"
            )
        prior = None if self.prior is None else self.prior.to_record()
        record = {**self.provenance, "prior": prior, "history": asdict(self.history)}
        metadata = {"pifnet_infer.source": "pifnet_infer.adapt", "pifnet_infer.adapt": json.dumps(record)}
        return save_weights(self, path, metadata=metadata)


def scratch_config(hsi_bands: int, msi_bands: int, ratio: int, device: torch.device) -> PIFNetConfig:
    """A PIF-Net sized for adaptation from scratch: slim on CPU, wider on GPU."""
    if device.type == "cuda":
        return PIFNetConfig(hsi_bands, msi_bands, ratio, dim=48, d_state=16, expand=2, num_stages=2)
    return PIFNetConfig(hsi_bands, msi_bands, ratio, dim=24, d_state=8, expand=1, num_stages=1)


def adapt(
    lr_hsi: np.ndarray | torch.Tensor,
    hr_msi: np.ndarray | torch.Tensor,
    *,
    ratio: int,
    base: str | os.PathLike[str] | None = "auto",
    hsi_wavelengths: np.ndarray | list[float] | None = None,
    msi_srf: str | np.ndarray | None = None,
    psf: PSFArg | None = None,
    prior: bool | Literal["auto"] = "auto",
    steps: int | Literal["auto"] = "auto",
    time_budget_s: float | None = None,
    lr: float = DEFAULT_LR,
    device: str | torch.device = "auto",
    progress: bool = True,
    seed: int = 0,
) -> AdaptedModel:
    """Adapt a PIF-Net to one scene (see the module docstring).

    Args:
        lr_hsi: (C, h, w) float LR-HSI (numpy or torch), e.g. reflectance.
        hr_msi: (c, r*h, r*w) float HR-MSI in units comparable to the HSI. Sizes are cropped to
            multiples of r (top-left kept); the LR-HSI needs at least ``3 r`` pixels per side.
        ratio: scale factor r (>= 2), must match the shapes.
        base: ``"auto"`` (a manifest weight with exactly this ratio and these HSI and MSI band counts,
            else from scratch: see the module docstring), a manifest name or ``.safetensors`` path, or
            None (from scratch). The base is copied, never modified; cached files are only read.
        hsi_wavelengths: LR-HSI band centres in nm (C,); needed with an SRF name, used to transfer
            a base's HSI head across band grids.
        msi_srf: the MSI's spectral response: a name (:func:`pifnet_infer.srf.list_srfs`), a (c, C)
            matrix, or None to estimate it from the pair (non-negative least squares).
        psf: the PSF between the grids, or None to fit a Gaussian from the pair.
        prior: learn a correction of the refined GLP-HS fusion (:mod:`pifnet_infer.adapt.prior`)
            instead of the whole image; ``"auto"``: unless the base weight has the scene's band
            counts (a base with other counts loses its head and tail, so its own fusion is no start).
        steps: maximum optimisation steps; ``"auto"``: :data:`AUTO_STEPS`.
        time_budget_s: wall-time limit of the whole call in seconds (checked before every step).
        lr: AdamW learning rate.
        device: ``"auto"`` (CUDA when available), or any torch device; bf16/fp16 autocast on CUDA.
        progress: show a progress bar over steps.
        seed: seeds initialisation, crops and the held-out split (results are reproducible on CPU).

    Returns:
        The :class:`AdaptedModel` in ``eval()`` mode on ``device``, at its best held-out state.

    Raises:
        ShapeMismatchError: shapes that do not fit the ratio, a scene too small, wrong SRF shape.
        SpectralCoverageError: an MSI band of the named SRF lies outside the HSI wavelengths.
        ValueError: NaN/inf inputs, bad ``steps``/``time_budget_s``/``lr``/``seed``.
        WeightsNotFoundError: unknown base weight.
    """
    start = time.perf_counter()
    max_steps = _check_options(steps, time_budget_s, lr, seed)
    if prior not in (True, False, "auto"):
        raise ValueError(f"prior must be True, False or 'auto', got {prior!r}")
    lr_np, msi_np = check_pair(lr_hsi, hr_msi, ratio)
    bands, msi_bands = lr_np.shape[0], msi_np.shape[0]
    wavelengths = check_wavelengths(hsi_wavelengths, bands)
    srf = resolve_srf(msi_srf, wavelengths, bands, msi_bands)
    dev = resolve_device(device)
    base_model, base_name = _resolve_base(base, int(ratio), msi_bands, bands)

    with torch.random.fork_rng(devices=[]), cpu_threads():  # at most the physical cores
        torch.manual_seed(seed)
        scene = prepare_scene(lr_np, msi_np, int(ratio), psf=psf, srf=srf, seed=seed)
        use_prior = _wants_prior(prior, base_model, bands, msi_bands)
        model = _build_model(base_model, scene, dev, wavelengths, use_prior)
        model.to(dev)
        trainer = _Trainer(model, scene, dev, lr=lr, seed=seed)
        trainer.run(max_steps, start=start, budget=time_budget_s, progress=progress)
    history = model.history
    history.seconds = time.perf_counter() - start
    history.psf, history.srf, history.pair_residual = scene.psf_source, scene.srf_source, scene.pair_residual
    model.provenance = {
        "base": base_name,
        "scene_lr_shape": list(scene.lr.shape),
        "scene_msi_shape": list(scene.msi.shape),
        "ratio": scene.ratio,
        "seed": seed,
        "device": str(dev),
        "library_version": __version__,
    }
    if wavelengths is not None:  # saved with the weights (model_band_grid), so fusing by path knows the grid
        model.band_grid = (tuple(float(w) for w in wavelengths), None)
    model.eval()
    _logger.info(
        "adapt: %d steps (%s), best held-out L1 %.4g at step %d, %.1f s",
        history.steps,
        history.stop_reason,
        history.best_val_loss,
        history.best_step,
        history.seconds,
    )
    return model


def _check_options(steps: int | str, time_budget_s: float | None, lr: float, seed: int) -> int:
    if steps == "auto":
        max_steps = AUTO_STEPS
    elif isinstance(steps, int) and not isinstance(steps, bool) and steps >= 1:
        max_steps = steps
    else:
        raise ValueError(f"steps must be 'auto' or a positive int, got {steps!r}")
    if time_budget_s is not None and not (isinstance(time_budget_s, int | float) and time_budget_s > 0):
        raise ValueError(f"time_budget_s must be None or a positive number of seconds, got {time_budget_s!r}")
    if not (isinstance(lr, int | float) and lr > 0 and math.isfinite(lr)):
        raise ValueError(f"lr must be a positive learning rate, got {lr!r}")
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise ValueError(f"seed must be an int, got {seed!r}")
    return max_steps


def _resolve_base(
    base: str | os.PathLike[str] | None, ratio: int, msi_bands: int, hsi_bands: int
) -> tuple[PIFNet | None, str | None]:
    """(a private copy of the base model, its name) or (None, None) for training from scratch."""
    if base is None:
        return None, None
    from pifnet_infer import weights

    if isinstance(base, str) and base == "auto":
        fitting = weights.weights_for(ratio=ratio, msi_bands=msi_bands, hsi_bands=hsi_bands)
        if not fitting:
            # A weight with another band count would keep only its body: measured on the bundled samples,
            # that start ended 13-15 dB below training from scratch within a 60 s budget
            # (benchmarks/results/bench_adapt_cpu_20261123-184547.json), so "auto" never picks one.
            _logger.info(
                "adapt: no manifest weight for ratio %d, %d HSI and %d MSI bands; training from scratch",
                ratio,
                hsi_bands,
                msi_bands,
            )
            return None, None
        base = fitting[0].name
    loaded = weights.load_model(base, device="cpu", dtype="float32")
    return copy.deepcopy(loaded), str(base)  # load_model caches its models: never train the cached object


def _wants_prior(prior: bool | str, base: PIFNet | None, bands: int, msi_bands: int) -> bool:
    """``prior="auto"``: a prior unless the base fits the band counts (then its own fusion is the start)."""
    if prior != "auto":
        return bool(prior)
    return base is None or (base.config.hsi_bands, base.config.msi_bands) != (bands, msi_bands)


def _build_model(
    base: PIFNet | None, scene: Scene, dev: torch.device, wavelengths: np.ndarray | None, use_prior: bool
) -> AdaptedModel:
    bands, msi_bands = scene.lr.shape[0], scene.msi.shape[0]
    prior = (
        ClassicalPrior(scene.psf, scene.srf, fit_glp_hs(scene.lr, scene.msi, scene.ratio, psf=scene.psf))
        if use_prior
        else None
    )
    if base is None:
        model = AdaptedModel(scratch_config(bands, msi_bands, scene.ratio, dev), prior)
        if prior is None:
            init_classical_start(model, scene)
    else:
        model = AdaptedModel(
            base.config.replace(hsi_bands=bands, msi_bands=msi_bands, ratio=scene.ratio), prior
        )
        entry = getattr(base, "weight_entry", None)
        base_wl = (
            None
            if entry is None or entry.hsi_wavelengths_nm is None
            else np.asarray(entry.hsi_wavelengths_nm)
        )
        transfer_weights(base, model, base_wavelengths_nm=base_wl, wavelengths_nm=wavelengths)
    if prior is not None:
        zero_output(model)
    return model


class _Trainer:
    """The optimisation loop of :func:`adapt` (state: model, optimiser, data on the device)."""

    def __init__(self, model: AdaptedModel, scene: Scene, dev: torch.device, *, lr: float, seed: int) -> None:
        self.model, self.scene, self.dev = model, scene, dev
        self.dtype = resolve_dtype("auto", dev)
        self.batch = BATCH_GPU if dev.type == "cuda" else BATCH_CPU
        self.gen = torch.Generator().manual_seed(seed)
        self.opt = torch.optim.AdamW(
            [p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=0.0
        )

        def tensor(a: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(np.ascontiguousarray(a)).to(dev)

        self.red_lr, self.red_msi = tensor(scene.reduced_lr), tensor(scene.reduced_msi)
        self.holdout = tensor(scene.holdout)
        self.target = tensor(scene.lr[:, : self.holdout.shape[0], : self.holdout.shape[1]])
        self.full_lr, self.full_msi = tensor(scene.lr), tensor(scene.msi)
        self.srf = tensor(scene.srf)
        r = scene.ratio
        # the prior's fusions of both pairs, computed once (empty lists without a prior)
        prior = model.prior
        self.red_prior = [] if prior is None else [tensor(prior.fuse(scene.reduced_lr, scene.reduced_msi, r))]
        self.full_prior = [] if prior is None else [tensor(prior.fuse(scene.lr, scene.msi, r))]
        self.flips = math.isclose(scene.psf.centre, (r - 1) / 2) and np.allclose(
            scene.psf.kernel, scene.psf.kernel[::-1, ::-1]
        )
        self.red_crop = (min(CROP_LR, self.red_lr.shape[1]), min(CROP_LR, self.red_lr.shape[2]))
        self.full_crop = (min(CROP_LR, self.full_lr.shape[1]), min(CROP_LR, self.full_lr.shape[2]))
        self.degrade = BlurDecimate(scene.psf, r, (r * self.full_crop[0], r * self.full_crop[1]), device=dev)
        side = (min(VAL_WINDOW_LR, self.full_lr.shape[1]), min(VAL_WINDOW_LR, self.full_lr.shape[2]))
        top, left = (self.full_lr.shape[1] - side[0]) // 2, (self.full_lr.shape[2] - side[1]) // 2
        hr_window = (slice(None), slice(r * top, r * (top + side[0])), slice(r * left, r * (left + side[1])))
        self.val_window = (
            self.full_lr[None, :, top : top + side[0], left : left + side[1]],
            self.full_msi[hr_window][None],
            [p[hr_window][None] for p in self.full_prior],
        )
        self.val_degrade = BlurDecimate(scene.psf, r, (r * side[0], r * side[1]), device=dev)

    def _crops(
        self, lr: torch.Tensor, hr: list[torch.Tensor], size: tuple[int, int]
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """A batch of aligned random crops: LR (B, C, size) and each HR tensor at r times the size."""
        r = self.scene.ratio
        rows = torch.randint(0, lr.shape[1] - size[0] + 1, (self.batch,), generator=self.gen).tolist()
        cols = torch.randint(0, lr.shape[2] - size[1] + 1, (self.batch,), generator=self.gen).tolist()
        flips = (
            torch.randint(0, 4, (self.batch,), generator=self.gen).tolist()
            if self.flips
            else [0] * self.batch
        )

        def cut(t: torch.Tensor, scale: int) -> torch.Tensor:
            parts = []
            for y, x, f in zip(rows, cols, flips, strict=True):
                part = t[..., scale * y : scale * (y + size[0]), scale * x : scale * (x + size[1])]
                dims = [d for d, bit in ((-2, 1), (-1, 2)) if f & bit]
                parts.append(part.flip(dims) if dims else part)
            return torch.stack(parts)

        return cut(lr, 1), [cut(t, r) for t in hr]

    def _forward(self, lr: torch.Tensor, msi: torch.Tensor, prior: list[torch.Tensor]) -> torch.Tensor:
        """The network's output, plus the prior's fusion of the same crops (``prior``: [] or [fusion])."""
        with torch.autocast(self.dev.type, dtype=self.dtype, enabled=self.dtype != torch.float32):
            out = self.model.network(lr, msi).float()
        return out + prior[0] if prior else out

    def _loss(self) -> torch.Tensor:
        lr, (msi, target, holdout, *prior) = self._crops(
            self.red_lr, [self.red_msi, self.target, self.holdout[None], *self.red_prior], self.red_crop
        )
        keep = (~holdout).to(target.dtype)
        out = self._forward(lr, msi, prior)
        reduced = ((out - target).abs() * keep).sum() / (keep.sum() * target.shape[1]).clamp_min(1.0)
        if CONSISTENCY_WEIGHT == 0:
            return reduced
        lr_f, (msi_f, *prior_f) = self._crops(self.full_lr, [self.full_msi, *self.full_prior], self.full_crop)
        fused = self._forward(lr_f, msi_f, prior_f)
        return reduced + CONSISTENCY_WEIGHT * self._consistency(lr_f, msi_f, fused, self.degrade)

    def _consistency(
        self, lr: torch.Tensor, msi: torch.Tensor, fused: torch.Tensor, degrade: BlurDecimate
    ) -> torch.Tensor:
        """Full-scale spectral + spatial consistency L1 (no reference needed)."""
        spectral = (degrade(fused) - lr).abs().mean()
        spatial = (torch.einsum("cC,bChw->bchw", self.srf, fused) - msi).abs().mean()
        return spectral + spatial

    @torch.no_grad()
    def _validate(self) -> float:
        """Held-out L1 of the reduced-resolution target, plus the consistency of a fixed full-scale window.

        The held-out part of a small scene is tiny; the full-scale consistency term also catches a
        network that fits the reduced scale while its full-scale output degrades.
        """
        self.model.eval()
        out = self._forward(self.red_lr[None], self.red_msi[None], [p[None] for p in self.red_prior])[0]
        mask = self.holdout.to(out.dtype)
        held_out = ((out - self.target).abs() * mask).sum() / (mask.sum() * out.shape[0])
        lr, msi, prior = self.val_window
        fused = self._forward(lr, msi, prior)
        self.model.train()
        return float(held_out + CONSISTENCY_WEIGHT * self._consistency(lr, msi, fused, self.val_degrade))

    def run(self, max_steps: int, *, start: float, budget: float | None, progress: bool) -> None:
        history = self.model.history
        best = self._validate()
        history.val_steps.append(0)
        history.val_loss.append(best)
        best_state = copy.deepcopy(self.model.state_dict())
        stale = 0
        self.model.train()
        bar = progress_bar(max_steps, enabled=progress, desc="adapt")
        try:
            for step in range(1, max_steps + 1):
                if budget is not None and time.perf_counter() - start >= budget:
                    history.stop_reason = "time_budget"
                    break
                loss = self._loss()
                self.opt.zero_grad(set_to_none=True)
                loss.backward()
                self.opt.step()
                history.steps = step
                history.train_loss.append(float(loss.detach()))
                bar.update(1)
                if step % EVAL_EVERY and step != max_steps:
                    continue
                val = self._validate()
                history.val_steps.append(step)
                history.val_loss.append(val)
                bar.set_postfix(val=f"{val:.4g}")
                if val < best:
                    best, stale, history.best_step = val, 0, step
                    best_state = copy.deepcopy(self.model.state_dict())
                else:
                    stale += 1
                    if stale >= PATIENCE:
                        history.stop_reason = "early_stopping"
                        break
        finally:
            bar.close()
        self.model.load_state_dict(best_state)
