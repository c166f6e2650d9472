"""The comparison table of ``privaudit report`` shows what issue 13 measures: sharpness, a distilled
student's L1 to its teacher, and the student's distillation options beyond the paper's."""

from __future__ import annotations

from typing import Any

from privaudit.report.markdown import to_markdown
from privaudit.report.tables import HEADERS, distillation_options, headers, row, row_cells


def report(defense: dict[str, Any] | None = None, **utility: Any) -> dict[str, Any]:
    return {"attack": {"auc": 0.52, "auc_ci95": [0.46, 0.58], "tpr_at_fpr": {"0.01": 0.02, "0.1": 0.12}},
            "utility": {"l1": 0.37, "ssim": 0.21, **utility}, "model": {"defense": defense or {"method": "none"}}}


def test_old_reports_keep_the_old_columns() -> None:
    assert headers([row("a", report())]) == HEADERS


def test_sharpness_and_teacher_l1_columns() -> None:
    teacher = row("teacher", report(sharpness=0.464))
    student = row("akd", report({"method": "akd"}, sharpness=0.3, fidelity_to_teacher={"nonmembers_l1": 0.1234, "proxy_l1": 0.05}))
    cols = headers([teacher, student])
    assert cols[cols.index("SSIM") + 1: cols.index("SSIM") + 3] == ["sharpness", "L1 to teacher"] and cols[-2:] == ["ε", "ε lb"]
    t, s = (dict(zip(cols, row_cells(r, cols))) for r in (teacher, student))
    assert (t["sharpness"], t["L1 to teacher"]) == ("0.464", "–")  # missing is "–", never 0
    assert (s["sharpness"], s["L1 to teacher"], s["SSIM"], s["L1"]) == ("0.300", "0.1234", "0.210", "0.3700")
    md = to_markdown([teacher, student])
    assert "| sharpness | L1 to teacher |" in md and "L1 to teacher: a distilled student's" in md
    # only sharpness: no empty teacher column
    assert "L1 to teacher" not in headers([teacher])


def test_distillation_options_in_the_defense_column() -> None:
    assert distillation_options({"method": "akd"}) == ""
    d = {"method": "akd", "distill_data": {"input_kind": "labels", "augment_copies": 4, "recombine": "cutpaste", "recombine_copies": 2},
         "objective": {"feature_matching": 10.0, "num_D": 2, "ema": 0.999}}
    assert distillation_options(d) == " (+4 aug, +2 cutpaste, FM 10, 2 D, EMA 0.999)"
    assert row("s", report(d)).method == "akd (+4 aug, +2 cutpaste, FM 10, 2 D, EMA 0.999)"
    assert row("s", report({"method": "dmp", "objective": {"ema": 0.99}})).method == "dmp (EMA 0.99)"
    assert row("s", report({"method": "akd", "distill_data": {"augment_copies": 0, "recombine": "none"}})).method == "akd"
