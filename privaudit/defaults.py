"""Every default, once: the config dataclasses and the Typer options both read these."""

# --- attack (privaudit attack, the attack inside privaudit evaluate; AttackConfig)
LOSS = "l1"  # the reconstruction loss: l1 (the paper's) or l2
SAMPLES = 1  # dropout draws averaged per image with --stochastic
ATTACK_BATCH_SIZE = 32  # images per forward pass
BOOTSTRAP = 1000  # bootstrap resamples for the AUC's 95% interval (0: none)

# --- evaluation (privaudit evaluate; EvaluateConfig, KID)
KID_SUBSETS = 100
KID_SUBSET_SIZE = 1000  # torch-fidelity's; clamped to the set sizes, and the value used is reported
REPEAT = 1  # seeds an audit is repeated with

# --- cli (options every command shares, and the demo's)
SEED = 0
DEVICE = "auto"  # CUDA when available, else the CPU
DEMO_OUT = "privaudit-demo"
DEMO_MAX_AUC = 0.6  # the gate's AUC limit in privaudit demo
