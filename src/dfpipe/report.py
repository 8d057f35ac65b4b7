"""Result tables as HTML pages for `snakemake --report`, whose page shows images and HTML inline but offers CSV
files only as downloads."""

from __future__ import annotations

import html
import os
from pathlib import Path

import pandas as pd

from dfpipe.io import atomic_path

STYLE = """body{font:14px system-ui,sans-serif;margin:1em;color:#1f2937}
table{border-collapse:collapse}th,td{border:1px solid #d1d5db;padding:3px 8px;text-align:right}
th{background:#f3f4f6;position:sticky;top:0}td:first-child,th:first-child{text-align:left}
tr:nth-child(even) td{background:#f9fafb}"""


def table_page(csv_path: str | os.PathLike, out_path: str | os.PathLike, title: str, digits: int = 4) -> None:
    """Write the CSV table at `csv_path` as a self-contained HTML page titled `title` (floats to `digits`
    decimals; empty cells stay empty), atomically."""
    table = pd.read_csv(csv_path)
    body = table.to_html(index=False, na_rep="", float_format=lambda x: f"{x:.{digits}f}", border=0)
    page = (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{STYLE}</style></head><body><h3>{html.escape(title)}</h3>"
        f"<p>{len(table)} rows · from {html.escape(Path(csv_path).name)}</p>{body}</body></html>\n"
    )
    with atomic_path(out_path) as tmp:
        Path(tmp).write_text(page, encoding="utf-8")
