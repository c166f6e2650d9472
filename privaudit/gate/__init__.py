"""The release gate: thresholds on a report's metrics → a verdict (pass / fail per check).

``policy`` reads and merges the thresholds (flags, ``privaudit.toml``, ``pyproject.toml``);
``verdict`` judges a report against them (``evaluate_gate``, a pure function); ``ci`` renders the
verdict as JUnit XML and Markdown. Reports are read with ``privaudit.report.load_report``.
Torch-free and numpy-free.
"""

from privaudit.gate.ci import to_junit_xml, to_markdown
from privaudit.gate.policy import POLICY_FILE, VALID_KEYS, GatePolicy, discover_policy, load_policy, make_policy, merge_policies, parse_tpr_flag
from privaudit.gate.verdict import GateCheck, GateVerdict, evaluate_gate, format_number

__all__ = [
    "POLICY_FILE", "VALID_KEYS", "GatePolicy", "GateCheck", "GateVerdict", "parse_tpr_flag", "make_policy", "merge_policies",
    "load_policy", "discover_policy", "evaluate_gate", "format_number", "to_junit_xml", "to_markdown",
]
