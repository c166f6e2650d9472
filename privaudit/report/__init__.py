"""Audit reports (``privaudit.report/1``, and ``/2`` with reference models): the format and its checks (``schema``), building one
(``build``), and comparing several (``tables``, ``markdown``, ``html``, ``plots``).

Importing this package costs no torch and no numpy: ``privaudit gate`` and ``privaudit report``
read reports without either (matplotlib is imported only when a plot is drawn).
"""

from privaudit.report.schema import REPORT_SCHEMA, REPORT_SCHEMA_2, find_fpr, fpr_key, load_report, parse_fpr, validate_report

__all__ = ["REPORT_SCHEMA", "REPORT_SCHEMA_2", "find_fpr", "fpr_key", "load_report", "parse_fpr", "validate_report"]
