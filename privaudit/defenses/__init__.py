"""Defenses that turn a leaking generator into a hardened checkpoint.

``METHODS`` is the registry of names the CLI accepts; ``check_method`` raises with the valid list.
"""

from __future__ import annotations

from privaudit.errors import InputError

METHODS = {
    "akd": "adversarial knowledge distillation on an unlabelled proxy set (the AKD paper)",
    "dmp": "distillation to the teacher's outputs with L1 only, no discriminator (DMP-style)",
    "gauss": "zero-mean Gaussian noise of sigma added to every output",
    "dpsgd": "DP-SGD training from scratch with Opacus (clipped, noised per-sample gradients)",
}


def check_method(name: str) -> str:
    if name not in METHODS:
        raise InputError(f"unknown --method {name!r}; choose one of {', '.join(METHODS)}")
    return name
