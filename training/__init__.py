"""Training, evaluation and export of pifnet-infer's own PIF-Net weights (not part of the installed package).

Run from the repository root, e.g. ``python -m training.train --setup pifnet-vnir-rgb-x4 --out-dir weights/runs/x``.
"""
