"""CPU threads: the physical-core count and the guard that keeps torch from oversubscribing them."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from pifnet_infer._utils import threads
from pifnet_infer._utils.threads import cpu_threads, physical_cores
from pifnet_infer.config import PIFNetConfig
from pifnet_infer.fusion import fuse
from pifnet_infer.models import PIFNet


@pytest.fixture(autouse=True)
def _restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_physical_cores_is_within_the_logical_cpus():
    assert 1 <= physical_cores() <= (os.cpu_count() or 1)


@pytest.mark.skipif(not hasattr(os, "sched_getaffinity"), reason="Linux only")
def test_physical_cores_follows_the_affinity_and_the_cgroup_quota(monkeypatch, tmp_path):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0})
    assert physical_cores() == 1
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(64)))
    monkeypatch.setattr(threads, "_SYS_CPU", tmp_path / "no-topology")  # each logical CPU counts once
    cpu_max = tmp_path / "cpu.max"
    monkeypatch.setattr(threads, "_CGROUP_CPU_MAX", cpu_max)
    cpu_max.write_text("150000 100000\n")  # 1.5 CPUs -> 2
    assert physical_cores() == 2
    cpu_max.write_text("max 100000\n")
    assert physical_cores() == 64


def test_hyper_threads_of_one_core_count_once(monkeypatch, tmp_path):
    for cpu, core in ((0, 0), (1, 0), (2, 1), (3, 1)):
        topology = tmp_path / f"cpu{cpu}" / "topology"
        topology.mkdir(parents=True)
        (topology / "core_id").write_text(f"{core}\n")
        (topology / "physical_package_id").write_text("0\n")
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    monkeypatch.setattr(threads, "_SYS_CPU", tmp_path)
    monkeypatch.setattr(threads, "_CGROUP_CPU_MAX", tmp_path / "absent")
    assert physical_cores() == 2


def test_cpu_threads_caps_never_raises_and_restores(monkeypatch):
    monkeypatch.setattr(threads, "physical_cores", lambda: 1)
    torch.set_num_threads(2)
    with cpu_threads() as n:
        assert n == torch.get_num_threads() == 1
    assert torch.get_num_threads() == 2
    monkeypatch.setattr(threads, "physical_cores", lambda: 4)
    with cpu_threads() as n:  # a lower count chosen by the user is kept
        assert n == torch.get_num_threads() == 2
    with cpu_threads(1) as n:
        assert n == torch.get_num_threads() == 1
    assert torch.get_num_threads() == 2


def test_fuse_runs_on_at_most_the_physical_cores(monkeypatch):
    monkeypatch.setattr(threads, "physical_cores", lambda: 1)
    model = PIFNet(PIFNetConfig(hsi_bands=4, msi_bands=3, ratio=4, dim=16)).eval()
    seen = []
    model.register_forward_hook(lambda *_: seen.append(torch.get_num_threads()))
    torch.set_num_threads(2)
    rng = np.random.default_rng(0)
    lr, msi = rng.random((4, 4, 4), dtype=np.float32), rng.random((3, 16, 16), dtype=np.float32)
    fuse(lr, msi, model, progress=False, device="cpu")
    assert seen and set(seen) == {1}
    assert torch.get_num_threads() == 2
