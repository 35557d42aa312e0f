"""Every shipped weight reproduces, on a bundled sample tile, the PSNR recorded when it was evaluated."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from pifnet_infer.weights import get_weight, list_weights, load_model
from pifnet_infer.weights.hub import find_local_file
from pifnet_infer.weights.selfcheck import measure_psnr, run_self_check, self_check_record

#: every manifest weight whose file is here without a download: bundled, or in a checkout's weights/
SHIPPED = [name for name in list_weights() if find_local_file(get_weight(name)) is not None]


def test_every_manifest_weight_records_a_self_check_and_is_here() -> None:
    assert SHIPPED, "the manifest ships no weight"
    assert [n for n in list_weights() if self_check_record(get_weight(n)) is None] == []
    unpublished = [n for n in list_weights() if not get_weight(n).published]
    assert set(unpublished) <= set(SHIPPED), "an unpublished weight must be bundled or in weights/"


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_weight_reproduces_its_recorded_psnr(name: str) -> None:
    result = run_self_check(name)
    assert result.ok, f"{name}: PSNR {result.psnr_db:.4f} dB, recorded {result.recorded_db:.4f} dB"


@pytest.mark.parametrize("name", SHIPPED)
def test_a_damaged_weight_fails_the_check(name: str) -> None:
    entry = get_weight(name)
    record = self_check_record(entry)
    model = load_model(name, device="cpu", dtype="float32")
    with torch.no_grad():  # a converter that reversed the output band order
        last = model.tail.net[2]
        last.weight.copy_(last.weight.flip(0))
        last.bias.copy_(last.bias.flip(0))
    damaged = measure_psnr(model, entry, record["sample"], tuple(record["rows"]), tuple(record["cols"]))
    assert abs(damaged - record["psnr"]) > record["tolerance_db"]


def test_cli_check_reports_every_weight() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "pifnet_infer", "weights", "check"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr
    for name in SHIPPED:
        assert name in run.stdout and "MISMATCH" not in run.stdout


def test_a_weight_below_its_target_warns_once_per_process(caplog) -> None:
    import logging

    from pifnet_infer import weights

    name = next(n for n in SHIPPED if not get_weight(n).metrics.get("target", {}).get("met", True))
    weights._WARNED.discard(name)
    with caplog.at_level(logging.WARNING, logger="pifnet_infer.weights"):
        load_model(name, device="cpu")
        load_model(name, device="cpu")
    warned = [r.getMessage() for r in caplog.records if "better choice" in r.getMessage()]
    assert len(warned) == 1 and name in warned[0] and "dB PSNR" in warned[0]
