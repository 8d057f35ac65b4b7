"""Result tables as HTML pages for the Snakemake report (dfpipe.report)."""

from __future__ import annotations

import pandas as pd

from dfpipe import report


def test_table_page_shows_every_cell_rounded_and_empty_where_missing(tmp_path):
    csv = tmp_path / "auc_table.csv"
    pd.DataFrame({"detector": ["meso4", "x<y"], "q95/all": [0.912345678, None]}).to_csv(csv, index=False)
    out = tmp_path / "report" / "auc.html"
    report.table_page(csv, out, "AUC & friends")
    page = out.read_text()
    assert "<title>AUC &amp; friends</title>" in page and "2 rows" in page and "auc_table.csv" in page
    assert "0.9123" in page and "0.912345678" not in page
    assert "x&lt;y" in page  # cell text is escaped
    assert "nan" not in page.lower().replace("&nbsp;", "")
    assert [p.name for p in out.parent.iterdir()] == ["auc.html"]  # written atomically, no temp file left
