"""Utility metrics and the full audit: KID/NKID with torch-fidelity's Inception (``inception``
finds and vets the weights, ``features`` extracts and caches features, ``kid`` computes), L1/PSNR/
SSIM (``pixel``), and ``evaluate`` (attack + utility + generalization gap). Import the module you
need: this package imports nothing itself, so reading reports never loads torch."""
