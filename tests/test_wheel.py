"""The wheel is self-contained: built from the repository and installed in a fresh venv, with no checkout
beside it, it finds its manifest and loads and runs every weight offline."""

from __future__ import annotations

import json
import subprocess
import sys
import sysconfig
import textwrap
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import pifnet_infer
    from pifnet_infer import fuse, list_weights, load_model

    result = {"package": pifnet_infer.__file__, "weights": {}}
    rng = np.random.default_rng(0)
    for name in list_weights():
        model = load_model(name)
        c, k, r = model.config.hsi_bands, model.config.msi_bands, model.config.ratio
        lr = rng.uniform(0.05, 0.5, (c, 8, 8)).astype(np.float32)
        msi = rng.uniform(0.05, 0.5, (k, 8 * r, 8 * r)).astype(np.float32)
        out = fuse(lr, msi, model, progress=False)
        result["weights"][name] = [list(out.shape), [c, 8 * r, 8 * r], bool(np.isfinite(out).all())]
    print(json.dumps(result))
    """
)


def test_wheel_in_a_fresh_venv_loads_and_runs_every_weight_offline(tmp_path):
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp_path), str(ROOT)],
        capture_output=True, text=True,
    )  # fmt: skip
    assert build.returncode == 0, build.stderr[-3000:]
    (wheel,) = tmp_path.glob("pifnet_infer-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    manifest = json.loads((ROOT / "weights_manifest.json").read_text())
    for entry in manifest["weights"]:
        assert f"pifnet_infer/weights/bundled/{entry['filename']}" in names, entry["name"]
    assert "pifnet_infer/weights_manifest.json" in names
    assert not any(n.startswith(("tests/", "training/", "benchmarks/")) for n in names)

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    install = subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)],
        capture_output=True, text=True,
    )  # fmt: skip
    assert install.returncode == 0, install.stderr[-3000:]
    # the dependencies (torch, numpy, ...) come from this interpreter's site-packages as a plain path: its .pth
    # files (this checkout's editable install among them) are not processed there
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    (Path(site) / "zz_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")

    env = {"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin", "PIFNET_DISABLE_PROGRESS_BARS": "1"}
    run = subprocess.run([str(python), "-c", SCRIPT], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert Path(result["package"]).is_relative_to(venv)
    assert set(result["weights"]) == {e["name"] for e in manifest["weights"]}
    for name, (shape, expected, finite) in result["weights"].items():
        assert shape == expected and finite, name
