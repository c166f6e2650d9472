"""Membership inference attacks and their metrics."""

from privaudit.attacks.metrics import AttackMetrics, attack_metrics
from privaudit.attacks.reconstruction import AttackConfig, AttackResult, reconstruction_losses, run_attack

__all__ = ["AttackMetrics", "attack_metrics", "AttackConfig", "AttackResult", "reconstruction_losses", "run_attack"]
