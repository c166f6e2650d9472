"""Training: one GAN loop with a pluggable step (``loop``), its resume state (``resume``), the
settings (``config``), and pix2pix (``pix2pix``: the objective, the plain step, ``fit``, and
``train``, the library entry of ``privaudit train``). DP-SGD's step lives in ``privaudit.defenses.dpsgd``.
"""

from privaudit.training.config import TrainConfig
from privaudit.training.loop import LOSS_BOUNDS, EpochStats, divergence, train_loop, training_record, weight_problem
from privaudit.training.pix2pix import TrainResult, fit, train
from privaudit.training.resume import discard_state, state_path

__all__ = ["LOSS_BOUNDS", "EpochStats", "TrainConfig", "TrainResult", "discard_state", "divergence", "fit", "state_path", "train", "train_loop",
           "training_record", "weight_problem"]
