"""The traceability matrix as CSV (for tools and spreadsheets) and as one self-contained HTML page.

hil.report.write_traceability builds the entries (requirement -> tests -> verdict -> evidence with
SHA-256) and writes Markdown and JSON; these writers render the same entries beside them. Every
catalogued requirement is a row; an uncovered one carries the reason. The HTML loads nothing from
outside (inline style, no script), so it opens offline like the Allure report.
"""

from __future__ import annotations

import csv
import html
from pathlib import Path
from typing import Any, Sequence

#: CSV columns: one row per requirement x test (a requirement without tests has one row, test columns empty).
CSV_COLUMNS = ("requirement", "regulation", "paragraph", "topic", "verdict", "reason", "test", "outcome", "duration_s",
               "fault_rows", "measurements", "measurements_outside_limits", "evidence")


def write_traceability_csv(entries: Sequence[dict[str, Any]], path: Path) -> Path:
    """`traceability.csv`: evidence cells list `path sha256` pairs separated by `; `."""
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(CSV_COLUMNS)
        for e in entries:
            head = [e["id"], e["regulation"] or "", e["paragraph"] or "", e["topic"] or "", e["verdict"],
                    e.get("reason", "")]
            if not e["tests"]:
                writer.writerow(head + [""] * (len(CSV_COLUMNS) - len(head)))
            for t in e["tests"]:
                outside = sum(1 for m in t["measurements"] if m.get("passed") is False)
                evidence = "; ".join(f"{ev['path']} {ev['sha256'] or 'MISSING'}" for ev in t["evidence"])
                writer.writerow(head + [t["nodeid"], t["outcome"], t["duration_s"],
                                        " ".join(str(r) for r in t["fault_rows"]), len(t["measurements"]), outside,
                                        evidence])
    return path


_STYLE = """
body{font:14px/1.45 system-ui,sans-serif;margin:2em;color:#222}
table{border-collapse:collapse;width:100%;margin:1em 0}
th,td{border:1px solid #ccc;padding:.35em .5em;vertical-align:top;text-align:left}
th{background:#f3f3f3}
.PASS{background:#dff5e1}.FAIL{background:#fbdada}.NOT-COVERED{background:#fff3cd}
code{font:12px ui-monospace,monospace}
.small{font-size:12px;color:#555}
"""


def _verdict_cell(verdict: str, reason: str = "") -> str:
    why = f"<div class=small>{html.escape(reason)}</div>" if reason else ""
    return f"<td class=\"{verdict.replace(' ', '-')}\"><b>{html.escape(verdict)}</b>{why}</td>"


def _measurement(m: dict[str, Any]) -> str:
    """`name = value unit  limits [low .. high]  PASS/FAIL` (a record may lack unit or limits)."""
    value = m.get("value")
    shown = f"{value:.4g}" if isinstance(value, (int, float)) else str(value)
    low, high = m.get("low"), m.get("high")
    return (f"<code>{html.escape(str(m.get('name')))} = {shown} {html.escape(str(m.get('unit', '')))}</code> limits "
            f"[{'-inf' if low is None else low} .. {'+inf' if high is None else high}] "
            f"<b>{'PASS' if m.get('passed') else 'FAIL'}</b>")


def write_traceability_html(known: Sequence[dict[str, Any]], unknown: Sequence[dict[str, Any]], path: Path, *,
                            generated: str, caveat: str) -> Path:
    """`traceability.html`: the summary table, then per requirement its tests, measurements and evidence hashes."""
    esc = html.escape
    rows = []
    for e in known:
        ref = f"{e['regulation']} {e['paragraph'] or ''}".strip()
        rows.append(f"<tr><td><a href=\"#{esc(e['id'])}\"><code>{esc(e['id'])}</code></a></td><td>{esc(ref)}</td>"
                    f"<td>{esc(e['topic'] or '')}</td><td>{len(e['tests'])}</td>{_verdict_cell(e['verdict'], e.get('reason', ''))}</tr>")
    details = []
    for e in list(known) + list(unknown):
        if not e["tests"]:
            continue
        items = []
        for t in e["tests"]:
            meas = "".join(f"<li>{_measurement(m)}</li>" for m in t["measurements"])
            ev = "".join(f"<li><code>{esc(x['path'])}</code> sha256 <code>{esc(x['sha256'] or 'MISSING')}</code></li>"
                         for x in t["evidence"])
            items.append(f"<tr><td><code>{esc(t['nodeid'])}</code></td>{_verdict_cell(t['outcome'].upper() if t['outcome'] in ('passed', 'failed') else t['outcome'])}"
                         f"<td><ul>{meas}</ul></td><td><ul>{ev}</ul></td></tr>")
        details.append(f"<h2 id=\"{esc(e['id'])}\">{esc(e['id'])} - {esc(e['verdict'])}</h2>"
                       f"<table><tr><th>test</th><th>outcome</th><th>measurements</th><th>evidence (SHA-256)</th></tr>"
                       + "".join(items) + "</table>")
    unknown_html = ""
    if unknown:
        unknown_html = ("<h2>Unknown requirement ids</h2><p>Used by tests but not in hil/report/requirements.py: "
                        + ", ".join(f"<code>{esc(e['id'])}</code>" for e in unknown) + "</p>")
    page = (f"<!DOCTYPE html><html lang=en><head><meta charset=utf-8><title>Traceability</title>"
            f"<style>{_STYLE}</style></head><body><h1>Traceability: requirement &rarr; test &rarr; verdict &rarr; evidence</h1>"
            f"<p class=small>Generated {esc(generated)}. Regulation references are {esc(caveat)}. Evidence paths are "
            f"relative to this file; check a file with <code>sha256sum &lt;path&gt;</code>.</p>"
            f"<table><tr><th>requirement</th><th>reference</th><th>topic</th><th>tests</th><th>verdict</th></tr>"
            + "".join(rows) + "</table>" + "".join(details) + unknown_html + "</body></html>\n")
    path.write_text(page, encoding="utf-8")
    return path
