"""Defenses that turn a leaking generator into a hardened checkpoint.

``defend(method=..., ...)`` runs one; ``DEFENSES`` (in ``registry``) maps each method name to its
class, with its own options dataclass: akd and dmp (``distill``), gauss (``gauss``), dpsgd (``dpsgd``).
"""

from __future__ import annotations

from privaudit.defenses.registry import DEFENSES, default_options, defend, get_defense, options_for

__all__ = ["DEFENSES", "default_options", "defend", "get_defense", "options_for"]
