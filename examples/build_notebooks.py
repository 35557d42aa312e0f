"""Write the example notebooks (without outputs) from the cells below: ``python examples/build_notebooks.py``.

Edit the notebooks here, not in Jupyter, so that they stay small, output-free and reviewable.
CI executes every notebook (``python -m pytest --nbmake examples``).
"""

from __future__ import annotations

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parent

SETUP = """\
%matplotlib inline
# The inline backend is non-interactive: figures are rendered as PNGs (in Jupyter and in CI alike).
import matplotlib.pyplot as plt
import numpy as np"""

HONEST = (
    "> **Read this first.** The bundled weight `pifnet-vnir-rgb-x4` is a first, CPU-trained experiment: "
    "on held-out data it scores **2.6 dB PSNR below the classical GLP-HS baseline** "
    "([model card](../docs/model_cards/pifnet-vnir-rgb-x4.md)). These notebooks show how the library is "
    "used and measured; for real results today, use GLP-HS (`pifnet_infer.baselines.glp_hs`)."
)

QUICKSTART = [
    new_markdown_cell(
        "# 01 - Quickstart: numpy arrays in, fused cube out\n\n"
        "Fuse a low-resolution hyperspectral image (LR-HSI, `(C, h, w)`) with a high-resolution RGB image "
        "(`(3, 4h, 4w)`) into a high-resolution hyperspectral cube (`(C, 4h, 4w)`), with the weight bundled "
        "in the package (offline, CPU, seconds).\n\n" + HONEST
    ),
    new_code_cell(
        SETUP + "\n\nimport pifnet_infer as pf\nfrom pifnet_infer.demo import false_colour, held_out_strip"
    ),
    new_markdown_cell(
        "## A reference scene and a simulated pair\n\n"
        "We take the held-out **test strip** of the bundled AVIRIS sample (the weight never saw it in training) "
        "on the sample's own bands between 400 and 1000 nm, and simulate what two sensors would see "
        "(Wald protocol): the LR-HSI is the reference blurred and decimated by 4, the RGB image is the "
        "reference seen through three broad colour filters. With real data you would load your own two "
        "arrays instead, in reflectance (0-1)."
    ),
    new_code_cell(
        "from pifnet_infer.simulate import simulate_pair\n\n"
        'reference, wavelengths = held_out_strip("aviris_gatorsense_vi")\n'
        'lr_hsi, rgb = simulate_pair(reference, 4, srf="rgb_gaussian", wavelengths_nm=wavelengths, psf="mtf")\n'
        'print("reference", reference.shape, "LR-HSI", lr_hsi.shape, "RGB", rgb.shape)\n'
        'print(f"{wavelengths.size} bands, {wavelengths.min():.0f}-{wavelengths.max():.0f} nm")'
    ),
    new_markdown_cell(
        "## The weight\n\n"
        "`list_weights()` shows what the manifest offers; `get_weight(name)` its metadata. This weight "
        "expects 61 bands on a 10 nm grid; our AVIRIS bands are on another grid, so we pass their "
        "wavelengths and `fuse` resamples them onto the weight's grid, fuses there and brings only the "
        "added detail back to our bands."
    ),
    new_code_cell(
        'print(pf.list_weights())\nentry = pf.get_weight("pifnet-vnir-rgb-x4")\n'
        "print(entry.description)\n"
        'print("ratio", entry.config.ratio, "| HSI bands", entry.config.hsi_bands, "| MSI", entry.msi_srf, '
        "entry.msi_bands_description)"
    ),
    new_markdown_cell("## Fuse"),
    new_code_cell(
        'fused = pf.fuse(lr_hsi, rgb, model="pifnet-vnir-rgb-x4", hsi_wavelengths_nm=wavelengths, device="cpu")\n'
        'print("fused", fused.shape, fused.dtype)'
    ),
    new_markdown_cell(
        "## Look at it\n\n"
        "False colour (860, 650, 550 nm as red, green, blue: vegetation shows red), the same stretch for "
        "every hyperspectral panel. The LR-HSI is shown with its 4 x 4 m pixels."
    ),
    new_code_cell(
        "from pifnet_infer.demo import percentile_limits, stretch\n\n"
        "picks = [int(np.argmin(abs(wavelengths - nm))) for nm in (860, 650, 550)]\n"
        "limits = percentile_limits(reference[picks])\n"
        "lr_big = lr_hsi.repeat(4, axis=1).repeat(4, axis=2)\n"
        "panels = {\n"
        '    "LR-HSI (false colour)": false_colour(lr_big, wavelengths, limits),\n'
        '    "RGB (HR-MSI)": stretch(rgb),\n'
        '    "fused (false colour)": false_colour(fused, wavelengths, limits),\n'
        '    "reference (false colour)": false_colour(reference, wavelengths, limits),\n'
        "}\n"
        'fig, axes = plt.subplots(len(panels), 1, figsize=(8, 8), layout="constrained")\n'
        "for ax, (title, image) in zip(axes, panels.items()):\n"
        '    ax.imshow(image, interpolation="nearest")\n'
        "    ax.set_title(title)\n"
        '    ax.axis("off")\n'
        "plt.show()"
    ),
    new_markdown_cell(
        "## How good is it? Compare with a classical method\n\n"
        "Because we simulated the pair we have the truth. GLP-HS, a classical method that needs no "
        "training, does better than this weight; see `03_evaluate.ipynb` for the full comparison."
    ),
    new_code_cell(
        "from pifnet_infer.baselines import glp_hs\nfrom pifnet_infer.metrics import evaluate\n\n"
        'glp = glp_hs(lr_hsi, rgb, 4, psf="mtf")\n'
        'for name, estimate in {"PIF-Net": fused, "GLP-HS": glp}.items():\n'
        "    scores = evaluate(reference, estimate, ratio=4)\n"
        "    print(f\"{name:8s} PSNR {scores['PSNR']:.2f} dB  SAM {scores['SAM']:.2f} deg\")"
    ),
    new_markdown_cell(
        "## Spectra of one pixel\n\nThe fused spectrum against the reference and the LR pixel that covers it."
    ),
    new_code_cell(
        "row, col = 12, 40\n"
        "fig, ax = plt.subplots(figsize=(7, 3.5))\n"
        'ax.plot(wavelengths, reference[:, row, col], "k", label="reference")\n'
        'ax.plot(wavelengths, lr_hsi[:, row // 4, col // 4], "--", label="LR-HSI pixel")\n'
        'ax.plot(wavelengths, fused[:, row, col], label="PIF-Net")\n'
        'ax.plot(wavelengths, glp[:, row, col], label="GLP-HS")\n'
        'ax.set_xlabel("wavelength (nm)")\nax.set_ylabel("reflectance")\nax.legend()\nplt.show()'
    ),
    new_markdown_cell(
        "## Next\n\n"
        "- Arrays from rasters on disk, with georeference: `02_geotiff_pipeline.ipynb`.\n"
        '- `fuse` also takes torch tensors (CPU or CUDA), `layout="hwc"`, integer data with `scale=`, '
        "NaN/`nodata` pixels and `out=` memmaps; see its docstring (`help(pf.fuse)`)."
    ),
]

GEOTIFF = [
    new_markdown_cell(
        "# 02 - The GeoTIFF pipeline: rasters in, georeferenced raster out\n\n"
        "`fuse_geotiff` reads an LR-HSI raster and an HR-MSI raster, checks that their grids fit (CRS, "
        "pixel sizes giving an integer ratio, alignment), fuses window by window (memory bounded by the "
        "tiles) and writes a tiled, compressed GeoTIFF with the HSI's CRS, the MSI's pixel size, band "
        "descriptions and wavelengths. The output file appears only if the run succeeds.\n\n" + HONEST
    ),
    new_code_cell(
        SETUP + "\n\nimport tempfile\nfrom pathlib import Path\n\nimport rasterio\n"
        "from rasterio.transform import Affine\n\n"
        "import pifnet_infer as pf\nfrom pifnet_infer.demo import false_colour, held_out_strip, percentile_limits, stretch\n"
        "from pifnet_infer.simulate import simulate_pair\n\n"
        'work = Path(tempfile.mkdtemp(prefix="pifnet-02-"))'
    ),
    new_markdown_cell(
        "## Two rasters\n\n"
        "We make them from a bundled sample (Wald simulation, as in `01_quickstart`) and give them a "
        "**made-up** georeference: UTM zone 17N (EPSG:32617), an arbitrary origin, 4 m HSI pixels and 1 m "
        "MSI pixels. The HSI bands carry their wavelengths as GDAL metadata, the way `fuse_geotiff` reads them "
        "(ENVI-style `wavelength` items, or the `IMAGERY` domain)."
    ),
    new_code_cell(
        'reference, wavelengths = held_out_strip("aviris_gatorsense_vi")\n'
        'lr_hsi, rgb = simulate_pair(reference, 4, srf="rgb_gaussian", wavelengths_nm=wavelengths, psf="mtf")\n'
        "x0, y0 = 500_000.0, 3_280_000.0  # made up\n\n\n"
        "def write(path, cube, pixel, wavelengths=None):\n"
        '    profile = dict(driver="GTiff", count=cube.shape[0], height=cube.shape[1], width=cube.shape[2],\n'
        '                   dtype="float32", crs="EPSG:32617", transform=Affine(pixel, 0, x0, 0, -pixel, y0))\n'
        '    with rasterio.open(path, "w", **profile) as dst:\n'
        "        dst.write(cube.astype(np.float32))\n"
        "        for band, nm in enumerate(wavelengths if wavelengths is not None else [], start=1):\n"
        '            dst.update_tags(band, wavelength=f"{nm:.6g}", wavelength_units="nm")\n'
        '            dst.set_band_description(band, f"{nm:.6g} nm")\n\n\n'
        'write(work / "lr_hsi.tif", lr_hsi, 4.0, wavelengths)\n'
        'write(work / "hr_msi.tif", rgb, 1.0)\n'
        'for name in ("lr_hsi.tif", "hr_msi.tif"):\n'
        "    with rasterio.open(work / name) as src:\n"
        '        print(f"{name}: {src.count} bands, {src.height} x {src.width} px, {src.crs}, "\n'
        '              f"pixel {src.res[0]:g} m, bounds {tuple(round(v) for v in src.bounds)}")'
    ),
    new_markdown_cell(
        "## Fuse\n\n"
        "The same call as the command line `pifnet-infer fuse --hsi lr_hsi.tif --msi hr_msi.tif --out "
        "fused.tif --weights pifnet-vnir-rgb-x4`."
    ),
    new_code_cell(
        'out = pf.fuse_geotiff(work / "lr_hsi.tif", work / "hr_msi.tif", work / "fused.tif",\n'
        '                      model="pifnet-vnir-rgb-x4", device="cpu", overwrite=True)\n'
        "with rasterio.open(out) as src:\n"
        "    fused = src.read()\n"
        '    print(f"{out.name}: {src.count} bands, {src.height} x {src.width} px, {src.crs}, pixel {src.res[0]:g} m")\n'
        '    print("transform:", src.transform)\n'
        '    print("bounds:", src.bounds)\n'
        '    print("band 1:", src.descriptions[0], src.tags(1))\n'
        '    print("profile:", {k: src.profile[k] for k in ("dtype", "tiled", "blockxsize", "compress")})\n'
        '    print("pifnet tags:", {k: v for k, v in src.tags().items() if k.startswith("PIFNET")})'
    ),
    new_markdown_cell(
        "## A map-like view\n\n"
        "Both rasters drawn in map coordinates (`extent` = raster bounds): the fused image sits exactly on "
        "the LR-HSI footprint, with pixels four times smaller."
    ),
    new_code_cell(
        "picks = [int(np.argmin(abs(wavelengths - nm))) for nm in (860, 650, 550)]\n"
        "limits = percentile_limits(reference[picks])  # one stretch for every hyperspectral panel\n"
        'files = {"lr_hsi.tif": "LR-HSI, false colour", "hr_msi.tif": "HR-MSI, RGB", "fused.tif": "fused, false colour"}\n'
        'fig, axes = plt.subplots(3, 1, figsize=(8, 7.5), layout="constrained", sharex=True)\n'
        "for ax, (name, title) in zip(axes, files.items()):\n"
        "    with rasterio.open(work / name) as src:\n"
        "        data, (left, bottom, right, top) = src.read(), src.bounds\n"
        '    image = stretch(data) if name == "hr_msi.tif" else false_colour(data, wavelengths, limits)\n'
        '    ax.imshow(image, extent=(left, right, bottom, top), interpolation="nearest")\n'
        '    ax.set_title(f"{name}: {title}")\n'
        '    ax.set_ylabel("northing (m)")\n'
        '    ax.ticklabel_format(useOffset=False, style="plain")\n'
        'axes[-1].set_xlabel("easting (m), EPSG:32617 (made up)")\n'
        "plt.show()"
    ),
    new_markdown_cell(
        "## Grids are checked before any compute\n\n"
        "An MSI shifted by half an HSI pixel is refused with a message that says what differs and how to fix "
        'it (`align="resample"` warps the MSI onto the HSI grid instead).'
    ),
    new_code_cell(
        'with rasterio.open(work / "hr_msi.tif") as src:\n'
        "    profile, data = src.profile, src.read()\n"
        "profile.update(transform=Affine(1.0, 0, x0 + 2.0, 0, -1.0, y0))\n"
        'with rasterio.open(work / "shifted_msi.tif", "w", **profile) as dst:\n'
        "    dst.write(data)\n"
        "try:\n"
        '    pf.fuse_geotiff(work / "lr_hsi.tif", work / "shifted_msi.tif", work / "bad.tif", device="cpu")\n'
        "except Exception as err:\n"
        '    print(type(err).__name__, ":", err)\n'
        'print("bad.tif written:", (work / "bad.tif").exists())'
    ),
    new_markdown_cell(
        "## The same from the command line\n\n"
        "`pifnet-infer info` shows both grids and which weights fit; `pifnet-infer fuse` runs the pipeline."
    ),
    new_code_cell(
        "import subprocess, sys\n\n"
        'cmd = [sys.executable, "-m", "pifnet_infer", "info", str(work / "lr_hsi.tif"), str(work / "hr_msi.tif")]\n'
        "print(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout)"
    ),
]

EVALUATE = [
    new_markdown_cell(
        "# 03 - Evaluate: the Wald protocol, baselines, per-band PSNR, SAM map\n\n"
        "With no ground-truth high-resolution hyperspectral image in the real world, fusion is measured by "
        "simulation (Wald protocol): degrade a reference cube into a pair, fuse the pair, compare with the "
        "reference. Here on the held-out test strips of both bundled samples, for PIF-Net (bundled weight), "
        "bicubic upsampling (no MSI), GLP-HS and GSA (classical), and GLP-HS refined by "
        "`pifnet_infer.adapt.refine`.\n\n" + HONEST
    ),
    new_code_cell(
        SETUP + "\n\nimport time\n\nimport pifnet_infer as pf\n"
        "from pifnet_infer.adapt import refine\nfrom pifnet_infer.baselines import bicubic, glp_hs, gsa\n"
        "from pifnet_infer.demo import held_out_strip\nfrom pifnet_infer.metrics import evaluate, sam_map\n"
        "from pifnet_infer.simulate import simulate_pair\nfrom pifnet_infer.srf import srf_matrix"
    ),
    new_markdown_cell(
        "## Simulate and fuse\n\n"
        'PSF: Gaussian matched to an MTF gain of 0.3 at Nyquist (`psf="mtf"`), ratio 4, RGB through the '
        "weight's `rgb_gaussian` response, no noise: the protocol of the weight's held-out evaluation. The "
        "classical methods are told the true PSF; `refine` fits PSF and responses from the pair itself."
    ),
    new_code_cell(
        "results, fused_by_scene = {}, {}\n"
        'for scene in ("aviris_gatorsense_vi", "muufl_gulfport_sub"):\n'
        "    reference, wl = held_out_strip(scene)\n"
        '    lr, rgb = simulate_pair(reference, 4, srf="rgb_gaussian", wavelengths_nm=wl, psf="mtf")\n'
        "    methods = {\n"
        '        "bicubic": lambda: bicubic(lr, 4),\n'
        '        "GLP-HS": lambda: glp_hs(lr, rgb, 4, psf="mtf"),\n'
        '        "GSA": lambda: gsa(lr, rgb, 4, psf="mtf"),\n'
        '        "PIF-Net": lambda: pf.fuse(lr, rgb, "pifnet-vnir-rgb-x4", hsi_wavelengths_nm=wl, device="cpu",\n'
        "                                   progress=False),\n"
        "    }\n"
        "    fused = {}\n"
        "    for name, run in methods.items():\n"
        "        start = time.perf_counter()\n"
        "        fused[name] = run()\n"
        '        results[(scene, name)] = evaluate(reference, fused[name], ratio=4) | {"s": time.perf_counter() - start}\n'
        '    fused["GLP-HS + refine"] = refine(fused["GLP-HS"], lr, rgb, ratio=4, device="cpu")\n'
        '    results[(scene, "GLP-HS + refine")] = evaluate(reference, fused["GLP-HS + refine"], ratio=4)\n'
        "    fused_by_scene[scene] = (reference, wl, fused)\n\n"
        "print(f\"{'scene':22s} {'method':16s} {'PSNR':>6s} {'SSIM':>6s} {'SAM':>6s} {'ERGAS':>6s}\")\n"
        "for (scene, name), s in results.items():\n"
        "    print(f\"{scene:22s} {name:16s} {s['PSNR']:6.2f} {s['SSIM']:6.3f} {s['SAM']:6.2f} {s['ERGAS']:6.2f}\")"
    ),
    new_markdown_cell(
        "Official protocol (the PIF-Net code's): estimate clamped to [0, 1], PSNR over the cube with the "
        "reference maximum as peak, SAM in degrees, ERGAS with the constant 4. `evaluate(..., "
        'protocol="standard")` gives the common literature conventions. Both strips are small (24 x 88 and '
        "28 x 24 px), so single-scene numbers are noisy; the weight's model card has the means over three scenes."
    ),
    new_markdown_cell("## Per-band PSNR"),
    new_code_cell(
        'fig, axes = plt.subplots(1, 2, figsize=(11, 3.8), layout="constrained")\n'
        "for ax, (scene, (reference, wl, fused)) in zip(axes, fused_by_scene.items()):\n"
        "    for name, estimate in fused.items():\n"
        "        err = ((np.clip(estimate, 0, 1) - reference) ** 2).mean(axis=(1, 2))\n"
        "        ax.plot(wl, 10 * np.log10(reference.max(axis=(1, 2)) ** 2 / err), label=name)\n"
        '    ax.set_title(scene)\n    ax.set_xlabel("wavelength (nm)")\n    ax.set_ylabel("PSNR (dB), band max as peak")\n'
        "axes[0].legend(fontsize=8)\nplt.show()"
    ),
    new_markdown_cell(
        "How to read it: the RGB responses cover about 400-700 nm, so in the visible the RGB image pins "
        "the spatial detail down and the classical methods reach very high per-band PSNR there; beyond about "
        "720 nm the RGB image carries no information about the detail and the methods are close to "
        "bicubic upsampling. A better learned model would have to win in the visible, where this weight is "
        "far behind GLP-HS."
    ),
    new_markdown_cell("## Where the spectra go wrong: SAM maps (degrees)"),
    new_code_cell(
        'reference, wl, fused = fused_by_scene["aviris_gatorsense_vi"]\n'
        'names = ["bicubic", "GLP-HS", "PIF-Net", "GLP-HS + refine"]\n'
        "maps = {n: sam_map(reference, np.clip(fused[n], 0, 1)) for n in names}\n"
        "vmax = np.percentile(np.concatenate([m.ravel() for m in maps.values()]), 99)\n"
        'fig, axes = plt.subplots(len(names), 1, figsize=(8, 7), layout="constrained")\n'
        "for ax, (name, m) in zip(axes, maps.items()):\n"
        '    image = ax.imshow(m, cmap="magma", vmin=0, vmax=vmax)\n'
        '    ax.set_title(f"{name}: mean SAM {m.mean():.2f} deg")\n    ax.axis("off")\n'
        'fig.colorbar(image, ax=axes, label="spectral angle (deg)")\nplt.show()'
    ),
    new_markdown_cell(
        "## From the command line\n\n"
        "`pifnet-infer evaluate` runs the same kind of comparison on a bundled sample or your own reference "
        "cube, e.g. `pifnet-infer evaluate --sample muufl_gulfport_sub --ratio 4 --srf rgb_gaussian --psf mtf "
        "--method bicubic,glp,gsa`."
    ),
]

LARGE = [
    new_markdown_cell(
        "# 04 - Large scenes: tiles, seams, progress, memory\n\n"
        "`fuse` never runs the network on the whole scene: it cuts the scene into tiles laid on the LR grid, "
        "overlapping by `overlap` HR pixels, and blends them with a smooth window that stays positive up to "
        "the scene border (mirror padding at the edges, never zeros). Memory is bounded by the tiles: the "
        "inputs, the output (or none with `out=` a memmap), about one row of tiles of float32 accumulators, "
        "and `batch_size` tiles of activations.\n\n"
        'To keep this notebook under a minute on a laptop CPU the "large" scene is a 96 x 144 px mosaic '
        "of the bundled AVIRIS sample (mirrored copies); a real scene goes the same way, only longer (PIF-Net "
        "on a CPU fuses a few thousand HR pixels per second with this small weight). Quality is not the "
        "point here (the mosaic includes pixels the weight was trained on).\n\n" + HONEST
    ),
    new_code_cell(
        SETUP + "\n\nimport resource\nimport tempfile\nimport time\nfrom pathlib import Path\n\n"
        "import pifnet_infer as pf\nfrom pifnet_infer.data import load_sample\n"
        "from pifnet_infer.demo import false_colour\nfrom pifnet_infer.simulate import simulate_pair\n\n\n"
        "def peak_rss_mib():\n"
        '    """Peak resident memory of this kernel so far (Linux reports KiB)."""\n'
        "    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024"
    ),
    new_markdown_cell("## A mosaic and its simulated pair"),
    new_code_cell(
        'sample = load_sample("aviris_gatorsense_vi")\n'
        "wl_all = sample.wavelengths_nm\n"
        "keep = (wl_all >= 400) & (wl_all <= 1000) & (sample.cube.reshape(wl_all.size, -1).max(axis=1) > 0)\n"
        "order = np.flatnonzero(keep)[np.argsort(wl_all[keep])]\n"
        "wl = wl_all[order]\n"
        "block = np.maximum(sample.cube[order, :48, :48], 0)\n"
        "row = np.concatenate([block, block[:, :, ::-1], block], axis=2)\n"
        "mosaic = np.concatenate([row, row[:, ::-1]], axis=1)\n"
        'lr, rgb = simulate_pair(mosaic, 4, srf="rgb_gaussian", wavelengths_nm=wl, psf="mtf")\n'
        'print("mosaic", mosaic.shape, "LR-HSI", lr.shape, "RGB", rgb.shape)\n'
        'print(f"output {mosaic.nbytes / 2**20:.1f} MiB float32; peak RSS so far {peak_rss_mib():.0f} MiB")'
    ),
    new_markdown_cell(
        "## Tiled fusion with a progress bar\n\n"
        "48 px tiles overlapping by 16 px. `progress=True` draws a tqdm bar (hidden when "
        "`PIFNET_DISABLE_PROGRESS_BARS=1`, as in CI); `callback(done, total)` is called after every tile, "
        "here to time them. The output goes into a memory-mapped file (`out=`), as it would for a scene "
        "larger than RAM."
    ),
    new_code_cell(
        'model = pf.load_model("pifnet-vnir-rgb-x4", device="cpu")\n'
        'work = Path(tempfile.mkdtemp(prefix="pifnet-04-"))\n'
        'out = np.lib.format.open_memmap(work / "fused.npy", mode="w+", dtype=np.float32, shape=mosaic.shape)\n'
        "ticks = []\n"
        "start = time.perf_counter()\n"
        "tiled = pf.fuse(lr, rgb, model, hsi_wavelengths_nm=wl, tile_size=48, overlap=16, out=out, progress=True,\n"
        "                callback=lambda done, total: ticks.append((done, total, time.perf_counter() - start)))\n"
        "tiled.flush()\n"
        "print(f\"{ticks[-1][1]} tiles in {ticks[-1][2]:.1f} s; result in {work / 'fused.npy'} ({type(tiled).__name__})\")\n"
        'print(f"peak RSS so far {peak_rss_mib():.0f} MiB")'
    ),
    new_markdown_cell(
        "## Seam check\n\n"
        "Three runs of the same scene: blended tiles (above), the official protocol's tiles that simply "
        "overwrite each other (`overlap=0`), and one tile covering the whole scene (no seams possible, "
        "the reference here). PIF-Net's scans see one tile, so tiled and whole-image results differ a "
        "little everywhere; a seam is a difference concentrated on the tile borders. (The band along the "
        "bottom edge in both maps comes from the reference run itself: its single 144 px tile covers the "
        "96-row scene by mirroring it, so near that edge it is no better a reference than the tiles.)"
    ),
    new_code_cell(
        "plain = pf.fuse(lr, rgb, model, hsi_wavelengths_nm=wl, tile_size=48, overlap=0, progress=False)\n"
        "whole = pf.fuse(lr, rgb, model, hsi_wavelengths_nm=wl, tile_size=144, overlap=0, progress=False)\n"
        "border = np.zeros(mosaic.shape[1:], dtype=bool)  # the two pixels either side of each 48 px tile border\n"
        "for k in range(48, mosaic.shape[1], 48):\n"
        "    border[k - 1 : k + 1, :] = True\n"
        "for k in range(48, mosaic.shape[2], 48):\n"
        "    border[:, k - 1 : k + 1] = True\n"
        'for name, result in {"blended, overlap 16": np.asarray(tiled), "overwrite, overlap 0": plain}.items():\n'
        "    diff = np.abs(result - whole).mean(axis=0)\n"
        '    print(f"{name:21s} mean |tiled - whole| on the 48 px grid lines {diff[border].mean():.5f}, "\n'
        '          f"elsewhere {diff[~border].mean():.5f}, max {diff.max():.4f}")'
    ),
    new_code_cell(
        'fig, axes = plt.subplots(3, 1, figsize=(7, 9), layout="constrained")\n'
        "axes[0].imshow(false_colour(np.asarray(tiled), wl))\n"
        'axes[0].set_title("fused mosaic (blended tiles), false colour")\n'
        "vmax = np.percentile(np.abs(plain - whole).mean(axis=0), 99.5)\n"
        'for ax, (name, result) in zip(axes[1:], {"blended, overlap 16": np.asarray(tiled), "overwrite, overlap 0": plain}.items()):\n'
        '    image = ax.imshow(np.abs(result - whole).mean(axis=0), cmap="magma", vmin=0, vmax=vmax)\n'
        '    ax.set_title(f"|{name} - whole image|, mean over bands")\n'
        "for ax in axes:\n"
        '    ax.axis("off")\n'
        'fig.colorbar(image, ax=axes[1:], label="reflectance")\nplt.show()'
    ),
    new_markdown_cell(
        "## Memory\n\n"
        "`peak_rss_mib()` is this kernel's peak, dominated at this size by Python, torch and the model. The "
        "scene-dependent part grows with one row of tiles, not with the scene: the accumulators hold about "
        "`tile_size x width x (bands + 1) x 4` bytes. Measured on a 2-core CPU in `benchmarks/` "
        "(`bench_fuse_memory.py`, a small random-init model): at 4096 x 4096 HR px with `out=` a memmap the "
        "anonymous memory grew by 42 MiB for a 512 MiB output."
    ),
    new_code_cell(
        "bands, height, width = mosaic.shape\n"
        'print(f"accumulators for one row of 48 px tiles: {48 * width * (bands + 1) * 4 / 2**20:.1f} MiB")\n'
        'print(f"the same for 128 px tiles on a 10,000 px wide scene: {128 * 10_000 * (bands + 1) * 4 / 2**20:.0f} MiB")\n'
        'print(f"peak RSS of this kernel: {peak_rss_mib():.0f} MiB")'
    ),
    new_markdown_cell(
        "## Bigger than this\n\n"
        "- GeoTIFFs of any size: `pf.fuse_geotiff` (window by window, output written block row by block row).\n"
        '- On a GPU, `batch_size="auto"` fills the memory with tiles and `dtype="auto"` uses bf16 autocast.\n'
        "- Timings: `BENCHMARKS.md` and `benchmarks/`."
    ),
]

NOTEBOOKS = {
    "01_quickstart.ipynb": QUICKSTART,
    "02_geotiff_pipeline.ipynb": GEOTIFF,
    "03_evaluate.ipynb": EVALUATE,
    "04_large_scene.ipynb": LARGE,
}


def build(folder: Path = HERE) -> list[Path]:
    """Write every notebook into ``folder``; returns their paths."""
    paths = []
    for name, cells in NOTEBOOKS.items():
        for number, cell in enumerate(cells):
            cell.id = f"cell-{number:02d}"  # stable ids: rebuilding gives the same file
        notebook = new_notebook(
            cells=cells,
            metadata={
                "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
                "language_info": {"name": "python"},
            },
        )
        nbformat.validate(notebook)
        path = folder / name
        nbformat.write(notebook, path)
        paths.append(path)
    return paths


if __name__ == "__main__":
    for written in build():
        print(written)
