"""The sweep report in a real browser: headless Chromium opens the page of a sample-archive sweep.

The page itself records, on load, how many images it has, how many did not decode
(naturalWidth 0) and how many table rows it shows, as attributes of <body>; Chromium's
--dump-dom gives them back. Console messages (errors included) are on Chromium's stderr with
--enable-logging=stderr; the page logs nothing, so any CONSOLE line fails the test.
Skipped when /usr/bin/chromium is absent (.ci/run installs Debian's chromium package).
"""
import os
import re
import subprocess

import pytest
from PIL import Image, ImageStat

from changesweep.pipeline import main as sweep_main
from changesweep.pipeline import report
from changesweep.pipeline.sinks import read_jsonl_rows
from tests.conftest import CVA_MODEL, SAMPLE_ARCHIVE

CHROMIUM = "/usr/bin/chromium"
pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"{CHROMIUM} is not installed"),
]
# Click headers, recording the row order (pair ids) after each: checks the inline sort script.
SORT_CHECK = """<script>window.addEventListener("load", function () {
  var order = function () {
    return Array.prototype.map.call(document.querySelectorAll("#pairs-table tbody tr"),
        function (tr) { return tr.getAttribute("data-pair-id"); }).join("|");
  };
  var th = document.querySelectorAll("#pairs-table th");
  th[1].click(); document.body.setAttribute("data-by-location", order());
  th[2].click(); document.body.setAttribute("data-by-before", order());
  th[4].click(); document.body.setAttribute("data-by-score-up", order());
  th[4].click(); document.body.setAttribute("data-by-score-down", order());
});</script>"""


def chromium(user_data_dir, *args, timeout=120):
  cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
         "--no-first-run", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--hide-scrollbars", f"--user-data-dir={user_data_dir}",
         "--enable-logging=stderr", "--v=0", "--virtual-time-budget=10000", *args]
  return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)


def body_attrs(dom):
  body = re.search(r"<body([^>]*)>", dom)
  assert body, dom[:2000]
  return dict(re.findall(r'(data-[\w-]+)="([^"]*)"', body.group(1)))


@pytest.fixture(scope="module")
def sample_report(tmp_path_factory):
  out = str(tmp_path_factory.mktemp("browser"))
  sweep_main.run(["--input", SAMPLE_ARCHIVE, "--output", out, "--model", CVA_MODEL,
                  "--run_id", "browser"])
  return out, report.write_report(out)


def test_report_renders_table_images_and_charts_without_console_errors(sample_report,
                                                                        tmp_path):
  out, index = sample_report
  run = chromium(tmp_path / "profile", "--dump-dom", "file://" + os.path.abspath(index))
  assert run.returncode == 0, run.stderr[-3000:]
  attrs = body_attrs(run.stdout)
  pairs = read_jsonl_rows(out, "pairs")
  locations = {r["location"] for r in pairs}
  assert attrs.get("data-status") == "ok", attrs
  assert attrs["data-broken-images"] == "0"
  assert int(attrs["data-table-rows"]) == len(pairs)
  # quicklook + region map per pair, and a time series per location
  assert int(attrs["data-images"]) == 2 * len(pairs) + len(locations)
  console = [line for line in run.stderr.splitlines() if "CONSOLE" in line]
  assert not console, console


def test_table_sorts_on_click(sample_report, tmp_path):
  out, index = sample_report
  with open(index, encoding="utf-8") as f:
    page = f.read().replace("</body>", SORT_CHECK + "</body>")
  probe = os.path.join(os.path.dirname(index), "sort-probe.html")
  with open(probe, "w", encoding="utf-8") as f:
    f.write(page)
  try:
    run = chromium(tmp_path / "profile", "--dump-dom", "file://" + os.path.abspath(probe))
  finally:
    os.remove(probe)
  pairs = read_jsonl_rows(out, "pairs")
  attrs = body_attrs(run.stdout)

  def by(key):
    return [r["pair_id"] for r in sorted(pairs, key=key)]

  assert attrs["data-by-location"].split("|") == by(lambda r: r["location"])
  assert attrs["data-by-before"].split("|") == by(lambda r: r["before_captured_at"])
  assert attrs["data-by-score-up"].split("|") == by(lambda r: r["change_score"])
  assert attrs["data-by-score-down"].split("|") == by(lambda r: -r["change_score"])


def test_screenshot(sample_report, tmp_path):
  _, index = sample_report
  shot = os.environ.get("CHANGESWEEP_REPORT_SCREENSHOT") or str(tmp_path / "report.png")
  run = chromium(tmp_path / "profile", f"--screenshot={os.path.abspath(shot)}",
                 "--window-size=1280,2000", "file://" + os.path.abspath(index))
  assert run.returncode == 0, run.stderr[-3000:]
  with Image.open(shot) as img:
    assert img.size == (1280, 2000)
    # not a blank page: the quicklooks make the lower part of the page far from uniform
    assert ImageStat.Stat(img.convert("L").crop((0, 700, 1280, 2000))).stddev[0] > 20
