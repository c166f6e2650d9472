"""Every default, defined once: the config dataclasses and the command-line options both read this table.

Plain constants, no imports, so reading a default never costs the CLI a torch import. One section per
command or config; add new defaults to the section they belong to.
"""

# --- pix2pix training (Isola et al.); the AKD paper trains its students with the same recipe
EPOCHS = 200
BATCH_SIZE = 1
LR = 2e-4
BETA1 = 0.5  # Adam's β1 (β2 = 0.999)
LAMBDA_L1 = 100.0  # λ, the weight of the L1 term
DECAY_EPOCHS: int | None = None  # linear learning-rate decay over the last N epochs; None: half of them
AUGMENT = True  # jitter (resize to 286/256 of the size, random crop) and flips
NGF = 64  # generator width
NDF = 64  # discriminator width
NORM = "batch"
DROPOUT = True
PRECISION = "auto"  # bf16 autocast on a CUDA GPU with native bf16, else fp32 (privaudit/accel.py)
DETERMINISTIC = False  # True: deterministic CUDA algorithms instead of cuDNN autotuning
SEED = 0
DEVICE = "auto"
DIRECTION = "AtoB"

# --- data: streamed from disk (--stream, --memory-budget, --workers; privaudit.data.stream)
MEMORY_BUDGET_SHARE = 0.25  # a set whose decoded pairs exceed this share of the machine's memory is streamed
MEMORY_BUDGET_FALLBACK_GB = 4.0  # the budget where the machine's memory cannot be read
STREAM_WORKERS = 4  # decoding worker processes of a streamed set, at most CPUs - 1
STREAM_SMALL_SET = 64  # below this many items a streamed set is decoded in the main process
STREAM_PREFETCH = 2  # batches each worker decodes ahead

# --- defenses (privaudit defend)
METHOD = "akd"
PROXY_LAYOUT = "auto"
DP_BATCH_SIZE = 8  # DP-SGD: the expected Poisson batch
DP_NOISE_MULTIPLIER = 1.0  # σ when neither --noise-multiplier nor --target-epsilon is given
DP_MAX_GRAD_NORM = 1.0  # C, the per-sample clipping norm
DP_ACCOUNTANT = "rdp"
# akd/dmp: the distillation set and the objective beyond the AKD paper's (all off: the paper's student,
# which dmp and `defend --method akd --paper` train)
INPUT_KIND = "auto"  # the proxy inputs are label maps or photos: detected
AUGMENT_COPIES = 0  # augmented copies of each proxy input
RECOMBINE = "none"  # cutpaste (label maps), mixup or cutmix (photos)
RECOMBINE_COPIES = 1  # recombined inputs per proxy input, with a RECOMBINE method
FEATURE_MATCHING = 0.0  # pix2pixHD's feature-matching weight (it uses 10)
NUM_D = 1  # discriminator scales
EMA: float | None = None  # decay of the moving average of the student's weights
# The default AKD student of `privaudit defend --method akd` (DistillOptions.sharp(), the library's
# default for akd; `--paper` gives the AKD paper's): from the ablation in docs/defenses.md
# (`objective-augment-short-ema995`): 4 augmented copies of each proxy input, λ = 10, pix2pixHD's
# feature matching, a second discriminator scale and an EMA of the weights (decay 0.995), for as
# many steps as AKD_PROXY_EPOCHS epochs of the proxy inputs alone (6 epochs of the 5x set). On
# facades (19 seeds, against the paper's student at 50 epochs, 7 seeds): AUC 50.4% (52.7%), TPR at
# 10% FPR 12.7% (14.4%), sharpness 0.92x the teacher's (0.64x), test L1 0.3869 (teacher 0.3878):
# the L1 criterion is met by 0.0009 (about one standard error of the mean), sharpness by about two.
# A decay of 0.99 was sharper (0.99x) but its L1 0.3895 (15 seeds) stayed above the teacher's. 50
# epochs' worth of steps was as private on facades but let the student copy more of an overfit toy
# teacher's leak (benchmarks/distill_leak_probe.py: AUC 62.6% against 56.0% at 30).
AKD_SHARP: dict[str, object] = {"augment_copies": 4, "recombine": "none", "feature_matching": 10.0, "num_D": 2, "lambda_l1": 10.0, "ema": 0.995,
                                "epochs": None}
AKD_PROXY_EPOCHS = 30

# --- attack (privaudit attack, the attack inside privaudit evaluate; AttackConfig)
LOSS = "l1"  # the reconstruction loss: l1 (the paper's) or l2
SAMPLES = 1  # dropout draws averaged per image with --stochastic
ATTACK_BATCH_SIZE = 32  # images per forward pass
BOOTSTRAP = 1000  # bootstrap resamples for the AUC's 95% interval (0: none)
FPRS = (0.001, 0.01, 0.1)  # the FPRs at which the report gives the TPR

# --- evaluation (privaudit evaluate; EvaluateConfig, KID)
KID_SUBSETS = 100
KID_SUBSET_SIZE = 1000  # torch-fidelity's; clamped to the set sizes, and the value used is reported
REPEAT = 1  # seeds an audit is repeated with

# --- cli (the demo's options; SEED and DEVICE are above)
DEMO_OUT = "privaudit-demo"
DEMO_MAX_AUC = 0.6  # the gate's AUC limit in privaudit demo

# --- Inception weights for KID (torch-fidelity's file; privaudit weights fetch and evaluate)
INCEPTION_WEIGHTS_FILENAME = "weights-inception-2015-12-05-6726825d.pth"
INCEPTION_WEIGHTS_URL = "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/" + INCEPTION_WEIGHTS_FILENAME
INCEPTION_WEIGHTS_SHA256 = "6726825d0af5f729cebd5821db510b11b1cfad8faad88a03f1befd49fb9129b2"  # pinned; see evaluation/fetch.py
WEIGHTS_ENV = "PRIVAUDIT_INCEPTION_WEIGHTS"

# --- semantic segmentation (--task segmentation: train, attack, defend, evaluate)
TASK = "translation"  # what a model does when nothing records it: image translation (pix2pix)
IGNORE_INDEX = 255  # label value that marks unlabelled pixels (excluded from losses and metrics)
SEG_ARCH = "unet"  # the U-Net with C output channels, or a torchvision segmentation architecture
SEG_NGF = 32  # the segmentation U-Net's width
SEG_EPOCHS = 50
SEG_BATCH_SIZE = 8
SEG_LR = 1e-3  # Adam
SEG_BETA1 = 0.9
SEG_AUGMENT = True  # flips, and resize-and-crop jitter (labels resized with nearest neighbour)
SEG_DP_BATCH_SIZE = 16  # DP-SGD: the expected Poisson batch
LABEL_SCORE = "accuracy"  # the label-only attack's per-image score: pixel accuracy or iou
LOSSMAP_SIZE = 32  # side of the loss maps the structured (loss-map) attack's CNN reads
LOSSMAP_EPOCHS = 40  # training epochs of that CNN on the shadow model's maps
