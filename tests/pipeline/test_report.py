"""The sweep report: its content against a real sweep's rows, escaping, limits and errors."""
import contextlib
import csv
import datetime as dt
import html.parser
import io
import json
import os
import shutil

import pytest
from PIL import Image

from changesweep.pipeline import main as sweep_main
from changesweep.pipeline import report, report_data, report_figures, report_page
from changesweep.pipeline.sinks import read_jsonl_rows
from tests.conftest import CVA_MODEL, SAMPLE_ARCHIVE


class Page(html.parser.HTMLParser):
  """What the tests read off the page: table rows by pair id, image sources, cards, text."""

  def __init__(self, text):
    super().__init__()
    self.table_rows, self.images, self.pair_sections, self.text = [], [], [], []
    self._in_table = False
    self.feed(text)

  def handle_starttag(self, tag, attrs):
    a = dict(attrs)
    if tag == "table":
      self._in_table = a.get("id") == "pairs-table"
    if tag == "tr" and self._in_table and "data-pair-id" in a:
      self.table_rows.append(a["data-pair-id"])
    if tag == "img":
      self.images.append(a["src"])
    if tag == "div" and a.get("class") == "pair":
      self.pair_sections.append(a["id"][len("pair-"):])

  def handle_endtag(self, tag):
    if tag == "table":
      self._in_table = False

  def handle_data(self, data):
    self.text.append(data)


def read_page(path):
  with open(path, encoding="utf-8") as f:
    return Page(f.read())


@pytest.fixture(scope="module")
def sample_report(tmp_path_factory):
  """`changesweep sweep` over the sample archive: it writes the report and ends with its path."""
  out = str(tmp_path_factory.mktemp("report"))
  stdout = io.StringIO()
  with contextlib.redirect_stdout(stdout):
    code = sweep_main.main(["--input", SAMPLE_ARCHIVE, "--output", out, "--model", CVA_MODEL,
                            "--run_id", "t"])
  assert code == 0
  index = os.path.join(out, "report", "index.html")
  assert stdout.getvalue().splitlines()[-1] == f"  report: {index}"
  with open(os.path.join(out, "run.json")) as f:
    return out, json.load(f), index


def copy_run(out, dest):
  """The files the report reads, copied (the change maps stay where the rows point)."""
  for sub in ("pairs", "dead_letter"):
    shutil.copytree(os.path.join(out, sub), os.path.join(dest, sub))
  shutil.copy(os.path.join(out, "run.json"), dest)
  return str(dest)


def test_table_holds_every_pair_in_change_score_order(sample_report):
  out, _, index = sample_report
  assert index == os.path.join(out, "report", "index.html")
  pairs = read_jsonl_rows(out, "pairs")
  expected = [r["pair_id"] for r in sorted(pairs, key=lambda r: -r["change_score"])]
  page = read_page(index)
  assert page.table_rows == expected
  assert page.pair_sections == expected  # 4 pairs < top 20: every pair has quicklooks
  text = " ".join(page.text)
  for r in pairs:
    assert f"{r['change_score']:.3f}" in text and r["location"] in text


def test_summary_and_attribution_match_run_json(sample_report):
  out, summary, index = sample_report
  text = " ".join(read_page(index).text)
  for key, label in (("locations", "locations"), ("pairs", "pairs scored"),
                     ("chips", "chips"), ("dead_letters", "dead letters")):
    assert f"{summary['counts'][key]} {label}" in " ".join(text.split())
  assert "changesweep report: t" in text
  assert "Contains modified Copernicus Sentinel data" in text
  assert summary["model"]["id"] in text and "Dead letters (0)" in text
  # progress counters went into the run's metrics: everything planned was done
  m = summary["metrics"]
  assert m["progress/pairs_done"] == m["progress/pairs_planned"] == summary["counts"]["pairs"]
  assert m["progress/chips_done"] == m["progress/chips_planned"] == summary["counts"]["chips"]


def test_images_exist_and_decode(sample_report):
  out, summary, index = sample_report
  page = read_page(index)
  n = summary["counts"]["pairs"]
  kinds = [os.path.basename(src).rsplit("-", 1)[-1] for src in page.images]
  assert kinds.count("quicklook.png") == n and kinds.count("regions.png") == n
  assert sum(src.startswith("img/series-") for src in page.images) == summary["counts"][
      "locations"]
  for src in page.images:
    assert not src.startswith(("http:", "https:", "//"))  # no network needed
    with Image.open(os.path.join(out, "report", src)) as img:
      img.load()
      assert img.format == "PNG" and img.width > 200 and img.height > 150


def test_pairs_csv_lists_all_pairs_ranked(sample_report):
  out, _, _ = sample_report
  with open(os.path.join(out, "report", "pairs.csv")) as f:
    lines = f.read().splitlines()
  ranked = report_data.rank_pairs(read_jsonl_rows(out, "pairs"))
  assert lines[0].startswith("rank,pair_id,location")
  assert [line.split(",")[1] for line in lines[1:]] == [r["pair_id"] for r in ranked]


def test_large_runs_show_top_n_and_link_the_rest(sample_report, tmp_path):
  out, _, _ = sample_report
  run = copy_run(out, tmp_path / "big")
  index = report.write_report(run, top_n=2, max_rows=3)
  page = read_page(index)
  ranked = [r["pair_id"] for r in report_data.rank_pairs(read_jsonl_rows(run, "pairs"))]
  assert page.table_rows == ranked[:3]
  assert page.pair_sections == ranked[:2]
  assert "Showing the top 3 of 4 pairs" in " ".join(page.text)
  assert 'href="pairs.csv"' in open(index).read()


def test_unreadable_capture_is_noted_not_fatal(sample_report, tmp_path):
  out, _, _ = sample_report
  run = copy_run(out, tmp_path / "moved")
  path = os.path.join(run, "pairs", os.listdir(os.path.join(run, "pairs"))[0])
  rows = [json.loads(line) for line in open(path).read().splitlines() if line.strip()]
  rows[0]["after_uri"] = str(tmp_path / "gone.tif")
  with open(path, "w") as f:
    f.write("".join(json.dumps(r) + "\n" for r in rows))
  logged = []
  page = read_page(report.write_report(run, log=logged.append))
  assert len(logged) == 1 and "gone.tif" in logged[0]
  assert "quicklook not drawn" in " ".join(page.text)
  assert len(page.table_rows) == len(rows)


def test_archive_text_is_escaped():
  hostile = '<script>alert("x")</script><img src=x onerror=alert(1)>&$\\alpha$'
  row = {"pair_id": '"><i>id', "location": hostile, "before_captured_at": "2020-01-01T00:00:00",
         "after_captured_at": "2021-01-01T00:00:00", "before_uri": hostile, "after_uri": hostile,
         "change_score": 0.5, "changed_fraction": 0.1, "changed_pixels": 3,
         "valid_fraction": 1.0, "regions": [], "crs": hostile, "change_map_uri": None}
  dead = [{"uri": hostile, "stage": "listing", "reason": hostile, "location": hostile}]
  summary = {"run_id": hostile, "archive": hostile, "output": "/x", "counts": {"pairs": 1},
             "model": {"id": hostile, "version": "1", "bands": [hostile]}}
  page = report_page.render_html(summary, [row], dead, {'"><i>id': {"error": hostile}},
                            [(hostile, "img/series-000.png")], attribution=hostile)
  assert "<script>alert" not in page and "<img src=x" not in page and '"><i>' not in page
  assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in page
  assert page.count("<script>") == 1  # the page's own sorting script only
  parsed = Page(page)
  assert parsed.table_rows == ['"><i>id'] and parsed.images == ["img/series-000.png"]
  # matplotlib labels: '$' must not start mathtext
  assert report_figures.series_figure(hostile, [row])[:4] == b"\x89PNG"


def test_no_report_option_is_known_to_the_sweep():
  from apache_beam.options.pipeline_options import PipelineOptions

  from changesweep.pipeline.options import SweepOptions

  assert PipelineOptions(["--no_report"]).view_as(SweepOptions).no_report
  assert not PipelineOptions([]).view_as(SweepOptions).no_report


def test_cli_help_and_errors(tmp_path, capsys):
  with pytest.raises(SystemExit) as e:
    report.main(["--help"])
  assert e.value.code == 0
  assert "example: changesweep report" in capsys.readouterr().out
  assert report.main([str(tmp_path)]) == 2
  err = capsys.readouterr().err
  assert "run.json" in err and str(tmp_path) in err
  with pytest.raises(SystemExit):
    report.main([str(tmp_path), "--top", "-1"])
  assert "--top" in capsys.readouterr().err


HOSTILE_PATH = 'gs://b/<script>alert("x")</script>"><img src=x onerror=alert(1)>'


def _row(**fields):
  row = {"pair_id": "p1", "location": "loc", "before_captured_at": "2020-01-01T00:00:00",
         "after_captured_at": "2021-01-01T00:00:00", "before_uri": "gs://b/a.tif",
         "after_uri": "gs://b/b.tif", "change_score": 0.5, "changed_fraction": 0.1,
         "changed_pixels": 3, "valid_fraction": 1.0, "regions": [], "crs": None,
         "change_map_uri": None}
  return {**row, **fields}


def test_gs_output_paths_are_url_quoted_in_links():
  summary = {"run_id": "r", "archive": "gs://a", "output": HOSTILE_PATH, "counts": {},
             "model": {}}
  page = report_page.render_html(summary, [_row(change_map_uri=HOSTILE_PATH + "/m.tif")], [])
  assert "<script>alert" not in page and "<img src=x" not in page
  assert page.count("<script>") == 1  # the page's own sorting script only
  quoted = ("https://storage.cloud.google.com/b/%3Cscript%3Ealert%28%22x%22%29%3C/script%3E"
            "%22%3E%3Cimg%20src%3Dx%20onerror%3Dalert%281%29%3E")
  assert f'href="{quoted}/pairs/"' in page and f'href="{quoted}/m.tif"' in page


@pytest.mark.parametrize("uri, base, want", [
    ("gs://bkt/out/maps/a b#1.tif", ".",
     "https://storage.cloud.google.com/bkt/out/maps/a%20b%231.tif"),
    ("/out/maps/m 1.tif", "/out/report", "../maps/m%201.tif"),
    ("javascript:alert(1)", os.getcwd(), "javascript%3Aalert%281%29"),  # a relative file name
    ("javascript://%0aalert(1)", ".", None),  # schemes a browser would run or cannot open
    ("s3://bkt/m.tif", ".", None),
    (None, ".", None),
])
def test_href_links_only_what_a_browser_can_open_safely(uri, base, want):
  assert report_page.href(uri, base) == want


def test_pairs_csv_neutralises_spreadsheet_formulas():
  names = ['=HYPERLINK("http://x","y")', "+1", "-2+3", "@SUM(A1)", "\tx", "\rx", "Paris"]
  rows = [_row(pair_id=f"p{i}", location=n, change_score=1 - i / 10) for i, n in enumerate(names)]
  got = list(csv.DictReader(io.StringIO(report_page.pairs_csv(rows).decode(), newline="")))
  assert [r["location"] for r in got] == ["'" + n for n in names[:-1]] + ["Paris"]
  # numbers and ordinary text pass unchanged
  assert [float(r["change_score"]) for r in got] == [r["change_score"] for r in rows]
  assert [r["before_uri"] for r in got] == ["gs://b/a.tif"] * len(rows)


@pytest.mark.parametrize("names, want", [
    (["B04", "B03", "B02"], [1, 2, 3]),
    (["B02", "B03", "B04", "B08"], [3, 2, 1]),
    (["nir", "red", "green", "blue"], [2, 3, 4]),  # the sweep's aliases
    (["B8", "B4", "B3", "B2"], [2, 3, 4]),
    ([None, None, None, None], [1, 2, 3]),  # no names: the first three
    (["VV", "VH"], [1, 2]),  # no true colour: what there is, shown grey
])
def test_true_colour_bands_resolve_like_the_sweep(names, want):
  assert report_data.pick_rgb(names) == want


def test_capture_times_parse_with_or_without_zone():
  want = dt.datetime(2021, 3, 4, 5, 6, 7)
  assert report_data.capture_time("2021-03-04T05:06:07Z") == want
  assert report_data.capture_time("2021-03-04T05:06:07+00:00") == want


def test_report_modules_import_one_way_and_stay_small():
  """report -> report_page / report_figures -> report_data, nothing back; each under 450 lines."""
  import ast

  allowed = {"report": {"report_data", "report_figures", "report_page"},
             "report_figures": {"report_data"}, "report_page": set(), "report_data": set()}
  for name, may in allowed.items():
    path = report_data.__file__.replace("report_data.py", f"{name}.py")
    with open(path) as f:
      text = f.read()
    assert len(text.splitlines()) <= 450, name
    imported = set()
    for node in ast.walk(ast.parse(text)):  # at every depth, inside functions too
      if isinstance(node, ast.ImportFrom) and node.module:
        imported |= ({f"{node.module}.{a.name}" for a in node.names}
                     if node.module == "changesweep.pipeline" else {node.module})
      elif isinstance(node, ast.Import):
        imported |= {a.name for a in node.names}
    reports = {i.rsplit(".", 1)[-1] for i in imported
               if i.startswith("changesweep.pipeline.report")}
    assert reports <= may, (name, reports - may)


def test_each_top_pair_links_its_cog_geojson_and_stac_item_and_draws_polygons(sample_report):
  out, _, index = sample_report
  with open(index) as f:
    html_text = f.read()
  for r in read_jsonl_rows(out, "pairs"):
    pid = r["pair_id"]
    for target in (f"../regions/pairs/{pid}.geojson", f"../stac/items/{pid}.json",
                   os.path.relpath(r["change_map_uri"], os.path.join(out, "report"))):
      assert f'href="{target}"' in html_text, target
      assert os.path.exists(os.path.join(out, "report", target))
  regions = read_jsonl_rows(out, "regions")
  assert regions and all(r["geometry_crs"] for r in regions)
  # the region maps are drawn from these polygons (the figure's title says which it drew)
  from changesweep.pipeline.report_figures import regions_figure
  pair = read_jsonl_rows(out, "pairs")[0]
  shapes = [r for r in regions if r["pair_id"] == pair["pair_id"]]
  assert regions_figure(pair, shapes=shapes) != regions_figure(pair)
