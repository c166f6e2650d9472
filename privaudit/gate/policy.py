"""Gate policies: thresholds on a report's metrics, from command-line flags or a TOML file
(``privaudit.toml`` with a ``[gate]`` table, or ``pyproject.toml`` with ``[tool.privaudit.gate]``),
found as ruff or pytest find theirs, validated, and merged (flags override the file).

A bad threshold is an InputError (a flag) or a ReportError (a policy file): exit code 2.
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping

from privaudit.errors import InputError, PrivauditError, ReportError
from privaudit.report.schema import fpr_key, parse_fpr

POLICY_FILE = "privaudit.toml"

EVALUATE_HINT = "run `privaudit evaluate` with Inception weights (--inception-weights FILE, not --no-kid) and --json"
ATTACK_HINT = "run `privaudit attack` or `privaudit evaluate` with --json"


@dataclass(frozen=True)
class Spec:
    """One scalar threshold: its policy key, check name, report key, range of valid limits, and
    the hint a report without that metric gets."""

    key: str
    label: str
    metric: str
    kind: str  # "rate": [0, 1]; "nonneg": >= 0; "real": any finite number
    hint: str


SPECS: tuple[Spec, ...] = (
    Spec("max_auc", "AUC", "attack.auc", "rate", ATTACK_HINT),
    Spec("max_auc_ci_upper", "AUC 95% CI upper", "attack.auc_ci95", "rate", ATTACK_HINT + " (and --bootstrap > 0)"),
    Spec("max_advantage", "advantage", "attack.advantage", "rate", ATTACK_HINT),
    Spec("max_nkid", "NKID", "utility.nkid", "nonneg", EVALUATE_HINT),
    Spec("max_epsilon", "ε (DP-SGD)", "model.defense.epsilon", "nonneg",
          "only DP-SGD models record one: harden with `privaudit defend --method dpsgd`"),
    Spec("max_gap", "generalization gap", "generalization_gap.gap", "real", EVALUATE_HINT),
    Spec("max_epsilon_lb", "ε lower bound (95%)", "attack.epsilon_lb", "nonneg", ATTACK_HINT + " (privaudit 0.3 or later writes it)"),
)
SEGMENTATION_HINT = "run `privaudit evaluate` on a segmentation model with --json"
# Lower limits: the check passes when value >= limit (utility that must not drop below a floor).
MIN_SPECS: tuple[Spec, ...] = (
    Spec("min_miou", "mean IoU", "utility.miou", "rate", SEGMENTATION_HINT),
)
TPR_KEY = "max_tpr_at_fpr"
ATTACK_KEY = "attack"
VALID_KEYS: tuple[str, ...] = tuple(s.key for s in SPECS) + tuple(s.key for s in MIN_SPECS) + (TPR_KEY, ATTACK_KEY)
# The attacks a threshold may be pinned to (--attack; ``attack`` in the policy). ``reference-only`` is
# a distribution check, not a membership attack. label-only and loss-map: segmentation reports.
GATE_ATTACKS = ("loss", "calibrated", "lira-offline", "lira-online", "label-only", "loss-map")


@dataclass(frozen=True)
class GatePolicy:
    """Optional upper limits on a report's metrics; ``None`` (or no entry) means "not checked".

    ``max_tpr_at_fpr`` maps an FPR (a string such as ``"0.01"``; ``"1e-2"`` means the same) to the
    largest TPR allowed at that FPR.
    """

    max_auc: float | None = None
    max_auc_ci_upper: float | None = None
    max_tpr_at_fpr: dict[str, float] = field(default_factory=dict)
    max_advantage: float | None = None
    max_nkid: float | None = None
    max_epsilon: float | None = None
    max_gap: float | None = None
    max_epsilon_lb: float | None = None
    attack: str | None = None  # the attack the attack thresholds apply to; None: the report's ``attack`` (the strongest)
    min_miou: float | None = None  # segmentation: the lowest mean IoU allowed on the test set

    @property
    def empty(self) -> bool:
        """True when the policy sets no threshold at all (pinning an attack is not a threshold)."""
        return not self.max_tpr_at_fpr and all(getattr(self, s.key) is None for s in SPECS + MIN_SPECS)


def _canonical(key: str) -> str:
    """The canonical spelling of an FPR key; an invalid key is kept (evaluate_gate reports it)."""
    try:
        return fpr_key(parse_fpr(key))
    except (TypeError, ValueError):
        return key


def parse_tpr_flag(values: list[str] | None) -> dict[str, float]:
    """``["0.01:0.05", "1e-3=0.01"]`` → ``{"0.01": 0.05, "0.001": 0.01}`` (``FPR:MAX`` or ``FPR=MAX``);
    InputError on a malformed item."""
    out: dict[str, float] = {}
    for item in values or []:
        sep_char = ":" if ":" in item else "="
        fpr_text, sep, limit_text = item.partition(sep_char)
        try:
            if not sep:
                raise ValueError
            fpr = parse_fpr(fpr_text.strip())
            limit = float(limit_text.strip())
        except ValueError:
            raise InputError(f"--max-tpr-at-fpr {item!r} is not FPR:MAX (or FPR=MAX); write e.g. --max-tpr-at-fpr 0.01:0.05 (FPR in (0, 1), MAX in [0, 1])") from None
        label = fpr_key(fpr)
        if label in out:
            raise InputError(f"--max-tpr-at-fpr gives FPR {label} twice; give each FPR once")
        out[label] = limit
    return out


def _limit(value: Any, kind: str, name: str, error: type[PrivauditError]) -> float:
    """Validate one threshold value; ``name`` says where it came from (a flag or a policy key)."""
    ranges = {"rate": "a number in [0, 1]", "nonneg": "a finite number >= 0", "real": "a finite number"}
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if ok and kind == "rate":
        ok = 0.0 <= value <= 1.0
    elif ok and kind == "nonneg":
        ok = value >= 0.0
    if not ok:
        raise error(f"{name} must be {ranges[kind]}, not {value!r}")
    return float(value)


def make_policy(values: Mapping[str, Any], *, source: str | None = None) -> GatePolicy:
    """Build a validated GatePolicy from a mapping of policy keys (``None`` values are skipped).

    ``source=None`` means command-line flags (errors are InputError and name ``--max-auc`` etc.);
    otherwise ``source`` names a policy file and table (errors are ReportError and name the key).
    """
    error: type[PrivauditError] = InputError if source is None else ReportError

    def name(key: str) -> str:
        return "--" + key.replace("_", "-") if source is None else f"{source}: {key}"

    unknown = sorted(k for k in values if k not in VALID_KEYS)
    if unknown:
        raise error(f"{source or 'command line'}: unknown key(s) {', '.join(unknown)}; valid keys: {', '.join(VALID_KEYS)}")
    kwargs: dict[str, Any] = {}
    pinned = values.get(ATTACK_KEY)
    if pinned is not None:
        if not isinstance(pinned, str) or pinned not in GATE_ATTACKS:
            extra = " (reference-only is a distribution check, not an attack)" if pinned == "reference-only" else ""
            raise error(f"{name(ATTACK_KEY)} {pinned!r} is not an attack{extra}; choose one of {', '.join(GATE_ATTACKS)}")
        kwargs[ATTACK_KEY] = pinned
    for spec in SPECS + MIN_SPECS:
        if values.get(spec.key) is not None:
            kwargs[spec.key] = _limit(values[spec.key], spec.kind, name(spec.key), error)
    tpr = values.get(TPR_KEY)
    if tpr is not None:
        if not isinstance(tpr, Mapping):
            raise error(f"{name(TPR_KEY)} must be a table of FPR = MAX, e.g. {TPR_KEY} = {{ \"0.01\" = 0.05 }}")
        limits: dict[str, float] = {}
        for key, limit in tpr.items():
            if isinstance(limit, Mapping):  # {0.01 = 0.05} is the dotted key 0 -> 01 in TOML
                raise error(f"{name(TPR_KEY)}: quote the FPR keys, e.g. {{ \"0.01\" = 0.05 }} (a bare 0.01 is a dotted key in TOML)")
            try:
                label = fpr_key(parse_fpr(key))
            except (TypeError, ValueError):
                raise error(f"{name(TPR_KEY)}: FPR {key!r} is not a number in (0, 1)") from None
            if label in limits:
                raise error(f"{name(TPR_KEY)} gives FPR {label} twice; give each FPR once")
            limits[label] = _limit(limit, "rate", f"{name(TPR_KEY)}[{label}]", error)
        kwargs[TPR_KEY] = limits
    return GatePolicy(**kwargs)


def merge_policies(base: GatePolicy, override: GatePolicy) -> GatePolicy:
    """``base`` with every threshold that ``override`` sets replaced (TPR limits merged per FPR)."""
    changes: dict[str, Any] = {s.key: getattr(override, s.key) for s in SPECS + MIN_SPECS if getattr(override, s.key) is not None}
    if override.attack is not None:
        changes[ATTACK_KEY] = override.attack
    tpr = {_canonical(k): v for k, v in base.max_tpr_at_fpr.items()}
    tpr.update({_canonical(k): v for k, v in override.max_tpr_at_fpr.items()})
    return replace(base, **changes, max_tpr_at_fpr=tpr)


def _read_toml(path: Path, what: str) -> dict[str, Any]:
    if not path.exists():
        raise ReportError(f"{what} {path} does not exist; check the path")
    if path.is_dir():
        raise ReportError(f"{what} {path} is a folder; give the TOML file (privaudit.toml or pyproject.toml)")
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise ReportError(f"cannot read {what} {path}: {getattr(exc, 'strerror', None) or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ReportError(f"{what} {path} is not valid TOML ({exc}); fix the syntax") from None


def _gate_table(data: dict[str, Any], path: Path) -> tuple[str, Any] | None:
    """The gate table of a parsed TOML file and its name, or None when it has none."""
    if path.name != "pyproject.toml" and "gate" in data:
        return "[gate]", data["gate"]
    tool = data.get("tool")
    pa = tool.get("privaudit") if isinstance(tool, dict) else None
    if isinstance(pa, dict) and "gate" in pa:
        return "[tool.privaudit.gate]", pa["gate"]
    return None


def load_policy(path: str | Path) -> GatePolicy:
    """Read a policy file → GatePolicy; ReportError when unreadable, lacking the table, or invalid.

    ``pyproject.toml`` is read from ``[tool.privaudit.gate]``; any other file from ``[gate]``
    (or ``[tool.privaudit.gate]`` when it has no ``[gate]``).
    """
    p = Path(path)
    found = _gate_table(_read_toml(p, "policy file"), p)
    if found is None:
        raise ReportError(f"policy file {p} has no [gate] table (privaudit.toml) or [tool.privaudit.gate] table (pyproject.toml); add one with e.g. max_auc = 0.6")
    table_name, table = found
    if not isinstance(table, dict):
        raise ReportError(f"policy file {p}: {table_name} must be a table of thresholds, e.g. max_auc = 0.6")
    return make_policy(table, source=f"policy {p} {table_name}")


def discover_policy(directory: str | Path = ".") -> Path | None:
    """The policy file that applies in ``directory``, as ruff or pytest would find theirs.

    ``privaudit.toml`` with a ``[gate]`` table, else ``pyproject.toml`` with ``[tool.privaudit.gate]``,
    else None. A found file that is not valid TOML raises ReportError.
    """
    for name in (POLICY_FILE, "pyproject.toml"):
        p = Path(directory) / name
        if p.is_file() and _gate_table(_read_toml(p, "policy file"), p) is not None:
            return p
    return None
