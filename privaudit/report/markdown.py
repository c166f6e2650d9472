"""Reports as Markdown (fits a CI job summary): the comparison table of ``privaudit report``."""

from __future__ import annotations

from privaudit.report.tables import FLIPPED_NOTE, SHIFT_NOTE, Row, headers, row_cells


def md_cell(text: str) -> str:
    """A table cell's text, safe inside a Markdown table row (``|`` escaped, one line)."""
    return text.replace("|", "\\|").replace("\n", " ")


def to_markdown(rows: list[Row], *, title: str = "privaudit: utility-privacy comparison") -> str:
    """The comparison as a Markdown table with a legend (and the flipped-score note when a row needs it)."""
    columns = headers(rows)
    lines = [f"### {title}", "", "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(md_cell(c) for c in row_cells(r, columns)) + " |" for r in rows]
    legend = "AUC: attack AUC (50% = chance, lower is more private). "
    if any(r.task == "translation" for r in rows):
        legend += ("NKID = KID / KID(all-black) on the test set (lower is better). gap = NKID(test) − NKID(train), positive = better on training data. "
                   "L1 on [-1, 1] images, test set. ")
        if any(r.sharpness is not None for r in rows):
            legend += "sharpness: Laplacian variance of the test outputs over the real photos' (1 = as detailed; noise raises it, read it with SSIM). "
        if any(r.teacher_l1 is not None for r in rows):
            legend += "L1 to teacher: a distilled student's mean L1 to its teacher's outputs on the test inputs. "
    if any(r.task == "segmentation" for r in rows):
        legend += "mIoU and pixel accuracy on the test set (higher is better); gap (mIoU) = mIoU(train) − mIoU(test), positive = better on training data. "
    lines += ["", legend + "– = not in the report.", ""]
    if any(r.flipped for r in rows):
        lines += [FLIPPED_NOTE.replace("*", "\\*", 1), ""]
    if any(r.shift for r in rows):
        lines += [SHIFT_NOTE, ""]
    return "\n".join(lines)
