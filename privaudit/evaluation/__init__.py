"""Utility metrics: KID/NKID with torch-fidelity's Inception (``kid``), L1/PSNR/SSIM (``pixel``),
plots and the comparison of reports (``compare``). Import the module you need: this package imports
nothing itself, so ``privaudit report`` (``compare``) runs without torch."""
