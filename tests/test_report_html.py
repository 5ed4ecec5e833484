"""The single-file Allure report: analytics script removed, and what headless Chromium sees in it.

A small synthetic run (two tests through the hil pytest plugin, no bench) produces real
allure-results; `hil report html` turns them into the report the suite ships. Chromium (Debian's
`chromium`, installed by .ci/run) must find the requirement tree, a measurement with its limit
and an attachment, and the page must make no request outside the file.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from hil.report.html import ReportError, external_references, sanitize_report, strip_analytics

from bench_ports import private_bench_file

ROOT = Path(__file__).resolve().parents[1]

#: What Allure 3.18's awesome template writes at the end of <body> (plugin-awesome/dist/generators.js).
ANALYTICS = """    <script async src="https://www.googletagmanager.com/gtag/js?id=G-LNDJ3J7WT0"></script>
    <script>
        window.dataLayer = window.dataLayer || [];
        function gtag(){dataLayer.push(arguments);}
        gtag('js', new Date());
        gtag('config', 'G-LNDJ3J7WT0', {"report": "awesome"});
    </script>
"""
PAGE = ("<html><head><script>window.allure = {};</script></head><body><div id=app></div>\n"
        "<script src=\"data:text/javascript;base64,Ly8gYXBw\"></script>\n" + ANALYTICS +
        "<script async>window.allureReportData = {\"a\": \"https://example.com/in-data-is-not-loaded\"};</script>\n"
        "</body></html>")


# ---------------------------------------------------------------------- stripping (fast)
def test_strip_removes_the_tracker_and_keeps_the_report_scripts():
    clean, result = strip_analytics(PAGE)
    assert "googletagmanager" not in clean and "gtag(" not in clean and "dataLayer" not in clean
    assert len(result.removed) == 2 and result.removed[0].startswith("https://www.googletagmanager.com/")
    for kept in ("window.allure = {}", "data:text/javascript;base64,Ly8gYXBw", "window.allureReportData"):
        assert kept in clean
    assert external_references(clean) == []
    assert strip_analytics(clean) == (clean, strip_analytics(clean)[1])  # idempotent: nothing more to remove


def test_external_references_finds_every_loading_element():
    html = ('<link rel="stylesheet" href="https://fonts.example/x.css"><img src="//cdn.example/a.png">'
            '<script src="data:text/javascript,1"></script><a href="https://allurereport.org">a link loads nothing</a>'
            "<iframe src='http://tracker.example/'></iframe>")
    assert external_references(html) == ["https://fonts.example/x.css", "//cdn.example/a.png", "http://tracker.example/"]


def test_a_report_still_loading_from_outside_is_refused(tmp_path):
    index = tmp_path / "index.html"
    index.write_text(PAGE.replace("</body>", '<link rel="stylesheet" href="https://fonts.example/x.css"></body>'))
    with pytest.raises(ReportError, match=r"still loads from outside the file.*fonts\.example"):
        sanitize_report(index)


# ---------------------------------------------------------------------- the real generator + browser
SYNTHETIC = '''
import allure
import pytest

from hil.errors import BenchBroken
from hil.timing.measure import Measurement


@pytest.mark.requirement("R156-integrity", "ISO24089-integrity")
def test_corrupted_image_is_rejected(measure, tmp_path):
    """A corrupted image is rejected and never executed"""
    import can

    m = measure(Measurement("download_throughput", 12.5, "KiB/s", 1.0, None))
    with can.Logger(str(tmp_path / "can.blf")) as trace:  # as the plugin attaches a test's CAN trace
        trace.on_message_received(can.Message(arbitration_id=0x180, data=bytes(8)))
    allure.attach.file(str(tmp_path / "can.blf"), name="can.blf", attachment_type="application/octet-stream",
                       extension="blf")
    allure.attach("   +0.000000       180  Rx  BMS_SocCore  SOC=0.0\\n", name="can-excerpt.txt",
                  attachment_type=allure.attachment_type.TEXT, extension="txt")
    assert m.passed


@pytest.mark.requirement("BMS-soc-timing")
def test_bench_error_is_its_own_category():
    raise BenchBroken("supply does not answer")
'''


def _chromium_or_skip() -> None:
    from hil.report.browser import find_chromium

    if find_chromium() is None:
        if os.environ.get("CI"):
            pytest.fail("Chromium missing on CI: .ci/run installs Debian's chromium package")
        pytest.skip("Chromium not installed (apt-get install -y chromium; .ci/run does this on CI)")


@pytest.fixture(scope="module")
def synthetic_results(tmp_path_factory) -> Path:
    """allure-results of a real pytest run with the hil plugin (no bench needed by these two tests)."""
    tmp = tmp_path_factory.mktemp("synthetic")
    (tmp / "test_synthetic.py").write_text(SYNTHETIC)
    results = tmp / "allure-results"
    proc = subprocess.run([sys.executable, "-m", "pytest", "-p", "hil.plugin", "-p", "no:cacheprovider", "-q",
                           str(tmp / "test_synthetic.py"), "--rootdir", str(tmp),
                           "--bench", str(private_bench_file("benches/sim.yaml", tmp)),
                           "--alluredir", str(results)], cwd=tmp, capture_output=True, text=True, timeout=120)
    assert "1 failed, 1 passed" in proc.stdout, proc.stdout[-3000:] + proc.stderr[-2000:]
    return results


def _hil_report(args: list[str], tmp: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HIL_ALLURE_HISTORY": str(tmp / "history.jsonl")}  # never the repository's trend file
    return subprocess.run([sys.executable, "-m", "hil", "report", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=300, env=env)


@pytest.fixture(scope="module")
def synthetic_report(synthetic_results, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("html")
    proc = _hil_report(["html", "--results", str(synthetic_results), "--output", str(out)], out)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "googletagmanager" in proc.stdout, "the report names what it removed"
    return out / "index.html"


def test_generated_report_carries_no_analytics_script(synthetic_report):
    html = synthetic_report.read_text()
    assert "googletagmanager" not in html and "gtag(" not in html
    assert external_references(html) == []
    assert len(html) > 1_000_000, "the single-file report embeds its app and data"


def test_report_in_headless_chromium(synthetic_report, tmp_path):
    """Requirement tree, measurement with its limit, attachment; no request leaves the file; screenshot kept."""
    _chromium_or_skip()
    shot = tmp_path / "requirements.png"
    proc = _hil_report(["check", str(synthetic_report), "--requirement", "R156-integrity", "--screenshot", str(shot)],
                       tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert '"requests_outside": []' in proc.stdout
    assert '"requirement tree": true' in proc.stdout and '"measurement with its limit": true' in proc.stdout
    assert '"attachment": true' in proc.stdout
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000


def test_browser_check_catches_the_unstripped_report(synthetic_results, tmp_path):
    """The same results through plain `allure generate`: Chromium records the request to the tracker."""
    _chromium_or_skip()
    from hil.report.html import check_in_browser

    out = tmp_path / "raw"
    env = {**os.environ, "HIL_ALLURE_HISTORY": str(tmp_path / "history.jsonl")}
    proc = subprocess.run(["npx", "--no-install", "allure", "generate", "--config", "reports/allurerc.mjs", "--output",
                           str(out), str(synthetic_results)], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = check_in_browser(out / "index.html", requirement="R156-integrity")
    assert not result.ok
    assert any("googletagmanager.com" in u for u in result.requests_outside), result.requests_outside


def test_check_names_what_is_missing(synthetic_report, tmp_path):
    """A requirement no test covers: the tree check fails and says so (the check can fail)."""
    _chromium_or_skip()
    proc = _hil_report(["check", str(synthetic_report), "--requirement", "R156-rxswin", "--screenshot",
                        str(tmp_path / "s.png")], tmp_path)
    assert proc.returncode != 0
    assert "missing from the page: ['requirement tree', 'measurement with its limit', 'attachment']" in proc.stderr, \
        proc.stdout + proc.stderr


def test_embedded_data_is_declared_before_the_app(synthetic_report):
    """The app must find its embedded data even when it starts before Allure's data script is parsed."""
    from hil.report.html import EARLY_DATA_SCRIPT

    html = synthetic_report.read_text()
    head_end = html.index("</head>")
    assert html.index(EARLY_DATA_SCRIPT) < head_end < html.index("window.allureReportDataReady = false;\n")
    assert html.count(EARLY_DATA_SCRIPT) == 1


def test_size_limit_of_the_single_file_report(tmp_path):
    from hil.report.html import MAX_REPORT_MB, size_problem

    small, big = tmp_path / "small.html", tmp_path / "big.html"
    small.write_bytes(b"x" * 1000)
    big.write_bytes(b"x" * int(2.5e6))
    assert MAX_REPORT_MB == 20 and size_problem(small) is None
    assert size_problem(big, 2.0) == (f"{big} is 2.5 MB, above the 2 MB an auditor's browser opens quickly: look at the "
                                      "largest attachments in the allure-results (the CAN trace goes in once, as .blf)")


def test_check_fails_a_report_above_its_size_limit(tmp_path, monkeypatch):
    """`hil report check --max-mb`: a report that passes in the browser still fails on its size, naming it."""
    from click.testing import CliRunner

    from hil.report import html as report_html

    found = {"requirement tree": True, "measurement with its limit": True, "attachment": True}
    monkeypatch.setattr(report_html, "check_in_browser",
                        lambda path, **kw: report_html.BrowserCheck([], found, kw.get("screenshot"), 0.1))
    index = tmp_path / "index.html"
    index.write_bytes(b"x" * 600_000)
    ok = CliRunner().invoke(report_html.check_command, [str(index), "--max-mb", "1"])
    assert ok.exit_code == 0 and '"megabytes": 0.6' in ok.output and '"ok": true' in ok.output, ok.output
    big = CliRunner().invoke(report_html.check_command, [str(index), "--max-mb", "0.5"])
    assert big.exit_code != 0 and '"ok": false' in big.output, big.output
    assert "is 0.6 MB, above the 0.5 MB" in big.output, big.output
