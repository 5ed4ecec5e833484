"""The single-file Allure report an auditor archives: generated, stripped of its analytics script, checked.

Allure 3's awesome plugin writes a Google Tag Manager `<script src="https://...">` plus an inline
`gtag(...)` call into every report (its template sets `analyticsEnable: true` unconditionally;
Allure 3.18 has no option to turn it off). An audit document opened on a networked PC must not
phone home, so `generate` removes both and then refuses a report that still references anything
outside itself. `check` opens the result in headless Chromium (hil.report_browser) and fails on
any request that leaves the file.

`make report` runs `hil report html`; `make suite` then runs `hil report check`.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import click

from hil.errors import HilError

#: Opening tags of elements that load something; their src/href must stay inside the file.
_LOADING_TAG = re.compile(r"<(script|link|img|iframe|source|audio|video|embed|object|track)\b([^>]*)>", re.I)
_URL_ATTR = re.compile(r"""\b(?:src|href|data)\s*=\s*["']?([^"'\s>]+)""", re.I)
#: A URL that leaves the file: a scheme with a host, or protocol-relative.
_EXTERNAL = re.compile(r"^(?:[a-z][a-z0-9+.-]*:)?//", re.I)
#: The single-file report's largest size (MB): an auditor's browser opens it in a few seconds (58 MB took 11 s).
MAX_REPORT_MB = 20.0
#: Inline scripts that exist only for the tracker (small; the report's own data scripts are megabytes).
_TRACKER_MARKERS = ("gtag(", "googletagmanager", "dataLayer")
_MAX_TRACKER_SCRIPT = 4000


class ReportError(HilError):
    """The report could not be generated, or it still loads something from outside the file."""


@dataclass
class Sanitized:
    """What `strip_analytics` removed."""

    removed: list[str] = field(default_factory=list)


def external_references(html: str) -> list[str]:
    """URLs that loading elements (script, link, img, iframe, ...) of `html` fetch from outside the file."""
    found = []
    for match in _LOADING_TAG.finditer(html):
        for url in _URL_ATTR.findall(match.group(2)):
            if _EXTERNAL.match(url):
                found.append(url)
    return found


def strip_analytics(html: str) -> tuple[str, Sanitized]:
    """Remove external scripts and the tracker's inline bootstrap script; the report's own scripts stay."""
    out: list[str] = []
    result = Sanitized()
    pos = 0
    for match in re.finditer(r"<script\b([^>]*)>", html, re.I):
        if match.start() < pos:  # inside a script already handled
            continue
        end = html.find("</script>", match.end())
        if end < 0:
            break
        close = end + len("</script>")
        attrs, body = match.group(1), html[match.end():end]
        src = _URL_ATTR.findall(attrs)
        external = any(_EXTERNAL.match(u) for u in src)
        tracker = (not src and len(body) <= _MAX_TRACKER_SCRIPT and any(m in body for m in _TRACKER_MARKERS))
        if external or tracker:
            out.append(html[pos:match.start()])
            result.removed.append(src[0] if external else f"inline script ({body.strip()[:60]}...)")
            pos = close
            while pos < len(html) and html[pos] in " \t\r\n":  # drop the line the tag stood on
                pos += 1
    out.append(html[pos:])
    return "".join(out), result


#: Declared first thing in <head>: the embedded data exists before the app's first fetch (see `declare_data_early`).
EARLY_DATA_SCRIPT = ("<script>/* hil: embedded report data declared before the app starts */"
                     "window.allureReportDataReady = false; window.allureReportData = window.allureReportData || {};</script>")


def declare_data_early(html: str) -> str:
    """Make the single-file report wait for its embedded data instead of fetching `widgets/*.json` from disk.

    Allure declares `window.allureReportData` in an inline script after the app's bundle; the app
    fetches from the file system whenever that variable is not there yet. On a 30 MB report and a
    busy PC the browser yields between the two and the app starts first: the report shows nothing
    and the page asks for files that do not exist (seen under load in `hil report check`).
    Declaring the variable in <head> makes the app wait for the data, as it does when it wins the race.
    """
    if "window.allureReportDataReady = false" not in html or EARLY_DATA_SCRIPT in html:
        return html
    head = re.search(r"<head[^>]*>", html, re.I)
    if head is None:
        raise ReportError("report has no <head>: cannot declare its embedded data early")
    return html[:head.end()] + EARLY_DATA_SCRIPT + html[head.end():]


def sanitize_report(index_html: Path) -> Sanitized:
    """Strip the analytics script from a generated report in place; raise if anything external remains."""
    html = index_html.read_text(encoding="utf-8")
    clean, result = strip_analytics(html)
    clean = declare_data_early(clean)
    left = external_references(clean)
    if left:
        raise ReportError(f"{index_html}: still loads from outside the file after stripping: {', '.join(left)}")
    if clean != html:
        index_html.write_text(clean, encoding="utf-8")
    return result


def generate(results: Sequence[Path], output: Path, *, config: Path, cwd: Path, timeout_s: float = 600.0) -> Sanitized:
    """`npx allure generate` (Allure 3, from node_modules) into `output`, then `sanitize_report` on its index.html."""
    missing = [str(r) for r in results if not Path(r).is_dir()]
    if missing:
        raise ReportError(f"allure results directory not found: {', '.join(missing)} (run the suite with --alluredir)")
    from hil.report.allure import write_categories

    npx = shutil.which("npx")
    if npx is None:
        raise ReportError("npx not found: install Node.js 20 and run `npm ci` (make setup)")
    cmd = [npx, "--no-install", "allure", "generate", "--config", str(config), "--output", str(output),
           *[str(r) for r in results]]
    with tempfile.TemporaryDirectory(prefix="hil-report-") as tmp:
        # The categories the config reads (reports/allurerc.mjs), fresh from hil.errors for this run.
        write_categories(Path(tmp))
        env = {**os.environ, "HIL_ALLURE_CATEGORIES": str(Path(tmp) / "categories.json")}
        try:
            proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout_s, env=env)
        except subprocess.TimeoutExpired as exc:
            raise ReportError(f"allure generate did not finish within {timeout_s:.0f} s: {' '.join(cmd)}") from exc
    # Allure exits 0 even when a plugin failed (e.g. a category regex it cannot compile): read its output too.
    failed = [ln for ln in (proc.stdout + proc.stderr).splitlines() if re.search(r"\berror\b", ln, re.I)]
    if proc.returncode != 0 or failed:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
        raise ReportError(f"allure generate failed (exit {proc.returncode}): {' '.join(cmd)}\n{tail}")
    index = Path(output) if Path(output).is_absolute() else Path(cwd) / output
    index = index / "index.html"
    if not index.is_file():
        raise ReportError(f"allure generate wrote no {index} (is singleFile set in {config}?)")
    return sanitize_report(index)


# ---------------------------------------------------------------------- browser check
@dataclass
class BrowserCheck:
    """What headless Chromium saw in the report."""

    requests_outside: list[str]
    found: dict[str, bool]
    screenshot: Path | None
    seconds: float

    @property
    def ok(self) -> bool:
        return not self.requests_outside and all(self.found.values())

    def __str__(self) -> str:
        missing = [k for k, v in self.found.items() if not v]
        return (f"requests outside the file: {self.requests_outside or 'none'}; "
                f"missing from the page: {missing or 'none'}; screenshot: {self.screenshot or '-'}")


def check_in_browser(index_html: Path, *, requirement: str, screenshot: Path | None = None,
                     timeout_s: float = 60.0) -> BrowserCheck:
    """Open the report in headless Chromium and look for what an auditor needs.

    Found on the page or not: the requirement tree (the requirement's feature, one of its cases
    and a test below it), a measurement with its limit (a step "name = value unit  limits [..]")
    and an attachment (the CAN trace `can.blf`) of that test. Every request the page made that
    leaves the file is listed. The screenshot shows the requirement view with the test open.
    """
    from hil.report.allure import CAN_TRACE_ATTACHMENT, feature_title
    from hil.errors import HilTimeout
    from hil.report.browser import Chromium, Page
    from hil.report.requirements import lookup

    feature = feature_title(lookup(requirement))
    started = time.monotonic()
    found = {"requirement tree": False, "measurement with its limit": False, "attachment": False}
    with Chromium(timeout_s=timeout_s) as browser:
        page = Page(browser)
        page.open(index_html, timeout_s=timeout_s)
        try:
            page.wait_js("document.querySelectorAll('[data-testid=\"tree-section-title\"]').length",
                         "the report's tree", timeout_s)
            page.wait_text(lambda t: feature in t, f"the requirement {feature!r}", 3)
            first = _open_group(page, [feature])
            cases = page.evaluate(_CASES_JS % json.dumps([feature])) or ([first] if first else [])
            test = None
            for case in cases[:12]:  # the first case with a passed test: its steps ran to the end
                if _open_group(page, [feature, case]):
                    found["requirement tree"] = True
                    test = page.evaluate(_CLICK_LEAF_JS % json.dumps([feature, case]))
                    if test:
                        break
            if test:
                try:
                    text = page.wait_text(lambda t: "limits [" in t, "a measurement step", 15)
                    found["measurement with its limit"] = bool(re.search(r"= \S+ .*limits \[.*\]", text))
                except HilTimeout:
                    pass
                text = page.wait_text(lambda t: CAN_TRACE_ATTACHMENT in t, "the CAN trace attachment", 15)
                found["attachment"] = CAN_TRACE_ATTACHMENT in text
        except HilTimeout:
            pass  # what was not found stays False; the requests below are still checked
        if screenshot is not None:
            # The app keeps scrolling the tree to the opened test for a while; put the requirement on top after it.
            for _ in range(3):
                time.sleep(0.7)
                page.evaluate(_SCROLL_TO_JS % json.dumps([feature]))
            page.screenshot(screenshot)
        time.sleep(0.5)  # late requests (async scripts) are recorded too
        visit = page.visit()
    return BrowserCheck(visit.outside(index_html), found, screenshot, time.monotonic() - started)


def _open_group(page: Any, path: Sequence[str]) -> str | None:
    """Expand the tree group at `path` (titles from the top; groups start open or closed), return its first child's text."""
    script = _CHILD_JS % json.dumps(list(path))
    child = page.evaluate(script)
    if child is None:
        page.evaluate(_TOGGLE_JS % json.dumps(list(path)))
        deadline = time.monotonic() + 10
        while child is None and time.monotonic() < deadline:
            time.sleep(0.1)
            child = page.evaluate(script)
    return str(child) if child is not None else None


#: Finds the tree group at a path of titles: each title is looked up inside the previous group's content.
_FIND_GROUP_JS = """
  const path = %s;
  let scope = document, section = null;
  for (const want of path) {
    const title = Array.from(scope.querySelectorAll('[data-testid="tree-section-title"]'))
      .find(e => e.offsetParent !== null && e.textContent.trim() === want);
    if (!title) return null;
    section = title.closest('[data-testid="tree-section"]');
    scope = section.parentElement.querySelector(':scope > [data-testid="tree-content"]') || section.parentElement;
  }
"""
#: The first child (group or test) of the group at a path, or null while it is collapsed or absent.
_CHILD_JS = "(() => {" + _FIND_GROUP_JS + """
  const content = section.parentElement.querySelector(':scope > [data-testid="tree-content"]');
  const child = content && content.querySelector('[data-testid="tree-section-title"], [data-testid="tree-leaf-title"]');
  return child ? child.textContent.trim() : null;
})()"""
#: Titles of the cases (child groups) of the group at a path.
_CASES_JS = "(() => {" + _FIND_GROUP_JS + """
  const content = section.parentElement.querySelector(':scope > [data-testid="tree-content"]');
  if (!content) return null;
  return Array.from(content.querySelectorAll('[data-testid="tree-section-title"]')).map(e => e.textContent.trim());
})()"""
#: Click the first passed test of the group at a path (opens it beside the tree); its title, or null.
_CLICK_LEAF_JS = "(() => {" + _FIND_GROUP_JS + """
  const content = section.parentElement.querySelector(':scope > [data-testid="tree-content"]');
  if (!content) return null;
  const leaf = Array.from(content.querySelectorAll('[data-testid="tree-leaf"]'))
    .find(l => l.querySelector('[data-testid="tree-leaf-status-passed"]'));
  if (!leaf) return null;
  leaf.scrollIntoView({block: 'center'});
  leaf.click();
  return leaf.querySelector('[data-testid="tree-leaf-title"]').textContent.trim();
})()"""
#: Scroll the group at a path to the top of the tree pane.
_SCROLL_TO_JS = "(() => {" + _FIND_GROUP_JS + """
  let box = section.parentElement;
  while (box && !(box.scrollHeight > box.clientHeight && /(auto|scroll)/.test(getComputedStyle(box).overflowY))) {
    box = box.parentElement;
  }
  if (!box) { section.scrollIntoView({block: 'start'}); return 'page'; }
  // Just below the sticky filter bar (its "Total" tab), which would otherwise cover the title.
  const bar = document.querySelector('[data-testid="tab-all"]');
  const top = bar ? bar.getBoundingClientRect().bottom + 12 : box.getBoundingClientRect().top;
  box.scrollTop += section.getBoundingClientRect().top - top;
  return 'tree';
})()"""
#: Click the group at a path (expands it).
_TOGGLE_JS = "(() => {" + _FIND_GROUP_JS + """
  section.scrollIntoView({block: 'center'});
  section.querySelector('[data-testid="tree-section-title"]').click();
  return true;
})()"""


# ---------------------------------------------------------------------- CLI
@click.command("html")
@click.option("--results", "results", multiple=True, default=["reports/allure-results"], show_default=True,
              type=click.Path(file_okay=False), help="allure-results directory (repeatable)")
@click.option("--output", default="reports/html", show_default=True, type=click.Path(file_okay=False))
@click.option("--config", default="reports/allurerc.mjs", show_default=True, type=click.Path(dir_okay=False))
def html_command(results: tuple[str, ...], output: str, config: str) -> None:
    """Generate the single-file report and strip the analytics script from it."""
    try:
        result = generate([Path(r) for r in results], Path(output), config=Path(config), cwd=Path.cwd())
    except ReportError as exc:
        raise click.ClickException(str(exc)) from None
    removed = ", ".join(" ".join(r.split()) for r in result.removed) or "nothing (no analytics script found)"
    click.echo(f"report: {Path(output) / 'index.html'} (removed: {removed})")


def size_problem(index_html: Path, max_mb: float = MAX_REPORT_MB) -> str | None:
    """Why the report is too big for an auditor's browser (None: it is not)."""
    size_mb = index_html.stat().st_size / 1e6
    if size_mb <= max_mb:
        return None
    return (f"{index_html} is {size_mb:.1f} MB, above the {max_mb:g} MB an auditor's browser opens quickly: look at "
            "the largest attachments in the allure-results (the CAN trace goes in once, as .blf)")


@click.command("check")
@click.argument("index_html", default="reports/html/index.html", type=click.Path(dir_okay=False))
@click.option("--requirement", default="R156-integrity", show_default=True,
              help="requirement whose tree, measurement and attachment must be visible")
@click.option("--screenshot", default=None, type=click.Path(dir_okay=False),
              help="PNG of the requirement view (default: requirements.png beside the report)")
@click.option("--max-mb", type=click.FloatRange(min=0, min_open=True), default=MAX_REPORT_MB, show_default=True,
              help="largest size of the single-file report (MB)")
def check_command(index_html: str, requirement: str, screenshot: str | None, max_mb: float) -> None:
    """Open the report in headless Chromium: requirement tree, a measurement with its limit, an attachment, no request
    outside the file; and the file is no larger than --max-mb."""
    path = Path(index_html)
    if not path.is_file():
        raise click.ClickException(f"report not found: {path} (run `make report` first)")
    shot = Path(screenshot) if screenshot else path.parent / "requirements.png"
    try:
        result = check_in_browser(path, requirement=requirement, screenshot=shot)
    except (HilError, KeyError) as exc:
        raise click.ClickException(str(exc)) from None
    too_big = size_problem(path, max_mb)
    click.echo(json.dumps({"ok": result.ok and too_big is None, "requests_outside": result.requests_outside,
                           "found": result.found, "megabytes": round(path.stat().st_size / 1e6, 1),
                           "max_megabytes": max_mb, "screenshot": str(result.screenshot),
                           "seconds": round(result.seconds, 1)}))
    if not result.ok:
        raise click.ClickException(f"the report failed the browser check: {result}")
    if too_big is not None:
        raise click.ClickException(too_big)
