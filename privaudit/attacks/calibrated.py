"""Membership scores calibrated by reference (shadow) models: difficulty calibration and LiRA.

Every function maps per-sample reconstruction losses to a membership score (higher = more likely a
member, the convention of ``attacks.metrics``), so the ROC machinery is shared with the plain attack.

Shapes: ``target`` is the audited model's loss per sample, (N,). ``refs`` holds the reference
models' losses on the same samples, (N, K). ``inside`` (N, K) bool marks, for online attacks, which
reference trained on which sample (IN); every other entry is OUT.

* ``calibrated`` (Watson et al. 2022; for image translation, Shafran et al. ICCV 2021): the mean
  OUT reference loss minus the target loss. An image that is hard for every model is no longer
  mistaken for a non-member. Works with one reference.
* ``lira_offline`` (Carlini et al. 2022, offline variant): a Gaussian fitted per sample to the OUT
  references' losses in log space (losses are positive and skewed; the log stabilises the
  variance), one-sided test: how unusually low is the target's loss. With few references the
  variance is pooled over all samples (Carlini et al.'s "global variance").
* ``lira_online``: per-sample IN and OUT Gaussians, the log-likelihood ratio of the target's loss.
* ``reference_only``: the reference models' mean loss alone, no target model. It measures how
  different the two sets are, not membership: when it separates members from non-members, the
  sets differ in distribution.

numpy and scipy only.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import norm

# Below this many OUT (or IN) references per sample, per-sample variances are too noisy to trust
# and one pooled variance is used (Carlini et al. use a global variance for small K).
MIN_REFS_FOR_PER_SAMPLE_VARIANCE = 8
EPS = 1e-12


def _log(x: np.ndarray) -> np.ndarray:
    return np.log(np.maximum(np.asarray(x, dtype=np.float64), EPS))


def _check(target: np.ndarray, refs: np.ndarray, inside: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    t = np.asarray(target, dtype=np.float64)
    r = np.asarray(refs, dtype=np.float64)
    if t.ndim != 1 or r.ndim != 2 or r.shape[0] != t.shape[0]:
        raise ValueError(f"target must be (N,) and refs (N, K); got {t.shape} and {r.shape}")
    mask = np.zeros(r.shape, dtype=bool) if inside is None else np.asarray(inside, dtype=bool)
    if mask.shape != r.shape:
        raise ValueError(f"inside must be shaped like refs {r.shape}, got {mask.shape}")
    return t, r, mask


def _masked_stats(values: np.ndarray, mask: np.ndarray, *, pooled: bool) -> tuple[np.ndarray, np.ndarray]:
    """Per-row mean and std of ``values`` where ``mask``; the std pooled over rows when ``pooled``."""
    counts = mask.sum(axis=1)
    if (counts == 0).any():
        row = int(np.flatnonzero(counts == 0)[0])
        raise ValueError(f"sample {row} has no reference of the needed kind (IN/OUT); train more references")
    mean = np.where(mask, values, 0.0).sum(axis=1) / counts
    dev2 = np.where(mask, (values - mean[:, None]) ** 2, 0.0)
    if pooled:
        dof = max(int(counts.sum() - len(counts)), 1)
        std = np.full(len(counts), np.sqrt(dev2.sum() / dof))
    else:
        std = np.sqrt(dev2.sum(axis=1) / np.maximum(counts - 1, 1))
    return mean, np.maximum(std, 1e-6)


def calibrated(target: np.ndarray, refs: np.ndarray, inside: np.ndarray | None = None) -> np.ndarray:
    """Mean OUT reference loss minus the target loss, (N,)."""
    t, r, mask = _check(target, refs, inside)
    out = ~mask
    counts = out.sum(axis=1)
    if (counts == 0).any():
        raise ValueError("every sample needs at least one OUT reference for the calibrated attack")
    return np.where(out, r, 0.0).sum(axis=1) / counts - t


def lira_offline(target: np.ndarray, refs: np.ndarray, inside: np.ndarray | None = None, *, pooled: bool | None = None) -> np.ndarray:
    """−log P[OUT loss ≤ target loss] under a per-sample Gaussian of the OUT references' log-losses, (N,).

    ``pooled`` None: pool the variance when fewer than ``MIN_REFS_FOR_PER_SAMPLE_VARIANCE`` OUT
    references per sample.
    """
    t, r, mask = _check(target, refs, inside)
    out = ~mask
    if pooled is None:
        pooled = int(out.sum(axis=1).min()) < MIN_REFS_FOR_PER_SAMPLE_VARIANCE
    mu, sd = _masked_stats(_log(r), out, pooled=pooled)
    return -norm.logcdf((_log(t) - mu) / sd)


def lira_online(target: np.ndarray, refs: np.ndarray, inside: np.ndarray, *, pooled: bool | None = None) -> np.ndarray:
    """log N(t; μ_in, σ_in) − log N(t; μ_out, σ_out) of the target's log-loss t, per sample, (N,)."""
    t, r, mask = _check(target, refs, inside)
    if pooled is None:
        pooled = min(int(mask.sum(axis=1).min()), int((~mask).sum(axis=1).min())) < MIN_REFS_FOR_PER_SAMPLE_VARIANCE
    lr, lt = _log(r), _log(t)
    mu_in, sd_in = _masked_stats(lr, mask, pooled=pooled)
    mu_out, sd_out = _masked_stats(lr, ~mask, pooled=pooled)
    return norm.logpdf(lt, mu_in, sd_in) - norm.logpdf(lt, mu_out, sd_out)


def reference_only(refs: np.ndarray, inside: np.ndarray | None = None) -> np.ndarray:
    """−(mean OUT reference loss): the plain attack's score without the target model, (N,)."""
    r = np.asarray(refs, dtype=np.float64)
    zeros = np.zeros(r.shape[0])
    return calibrated(zeros, r, inside) * -1.0
