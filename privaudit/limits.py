"""Upper bounds on counts a user sets, defined once: a value past them is a typo or a misunderstanding
(each costs time linearly, with no statistical gain left), so it is refused with its flag named.
"""

from __future__ import annotations

from privaudit.errors import InputError

# Bootstrap resamples of the AUC interval: its percentiles are stable to about 1e-3 after 10,000.
MAX_BOOTSTRAP = 100_000
# Dropout draws averaged per image (--stochastic): each one is a full pass over both sets.
MAX_SAMPLES = 1_000
# Seeds an evaluation is repeated over: each one is a full audit.
MAX_REPEAT = 100
# KID subsets: torch-fidelity computes one polynomial-kernel MMD per subset.
MAX_KID_SUBSETS = 10_000
# Decoding worker processes of a streamed data set (--workers): past a few per core they only wait.
MAX_STREAM_WORKERS = 64


def check_at_most(value: int, cap: int, flag: str, why: str) -> int:
    """Refuse ``value`` above ``cap`` with one line naming ``flag``, the cap and why it exists."""
    if value > cap:
        raise InputError(f"{flag} {value} is above the limit of {cap} ({why}); pass {flag} {cap} or less")
    return value
