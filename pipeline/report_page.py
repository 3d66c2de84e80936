"""The report's text: the HTML page (with its CSS and table-sorting script inline) and pairs.csv.

Pure functions of data: `render_html` never reads a file. Every archive-provided string is
HTML-escaped (`_e`), every link to an output is percent-encoded (`href`), and every CSV cell that
a spreadsheet would read as a formula is neutralised (`csv_cell`).
"""
from __future__ import annotations

import csv
import datetime as dt
import html
import io
import os
import re
from typing import Iterable
from urllib.parse import quote

DEFAULT_ATTRIBUTION = "Contains modified Copernicus Sentinel data"
DEFAULT_MAX_ROWS = 500
GCS_BROWSER = "https://storage.cloud.google.com/"
CSV_FIELDS = ("rank", "pair_id", "location", "before_captured_at", "after_captured_at",
              "change_score", "changed_fraction", "changed_pixels", "mean_change_prob",
              "max_change_prob", "valid_fraction", "num_regions", "crs", "before_uri",
              "after_uri", "change_map_uri", "shift_flagged", "coregistered")
# What makes a spreadsheet read a cell as a formula (OWASP "CSV Injection"), and LF.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r", "\n")
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://(.*)$", re.DOTALL)


# --------------------------------------------------------------------------------------------
# Cells and links


def _fmt(value, digits: int = 3) -> str:
  if value is None:
    return "–"
  if isinstance(value, float):
    return f"{value:.{digits}f}"
  return str(value)


def _pct(value) -> str:
  return "–" if value is None else f"{100 * value:.1f}%"


def _e(value) -> str:
  return html.escape("" if value is None else str(value), quote=True)


def href(uri: str | None, base: str) -> str | None:
  """A link to an output file, percent-encoded so no path can end the attribute or the tag.

  Local files link relative to the report folder `base`; gs:// objects link to the Cloud
  Storage browser. Other schemes (s3://, ..., javascript://) get no link: a browser could not
  open them, and some would run.

  Returns:
    The URL (still to be HTML-escaped where it goes into an attribute), or None.
  """
  if not uri:
    return None
  m = _SCHEME.match(uri)
  if m:
    return GCS_BROWSER + quote(m[2]) if m[1].lower() == "gs" else None
  rel = os.path.relpath(os.path.abspath(uri), os.path.abspath(base))
  return quote(rel.replace(os.sep, "/"))


def csv_cell(value):
  """A CSV value a spreadsheet shows as text: strings that would start a formula get a leading
  single quote (OWASP's advice for CSV exports); other values pass unchanged."""
  if isinstance(value, str) and value.startswith(FORMULA_STARTS):
    return "'" + value
  return value


def pairs_csv(ranked: list[dict]) -> bytes:
  """pairs.csv: every pair in `ranked` order with its rank, one row each, formula-safe."""
  buf = io.StringIO()
  w = csv.DictWriter(buf, CSV_FIELDS, extrasaction="ignore")
  w.writeheader()
  for rank, r in enumerate(ranked, 1):
    row = {**r, "rank": rank, "num_regions": len(r.get("regions") or [])}
    w.writerow({k: csv_cell(row.get(k)) for k in CSV_FIELDS})
  return buf.getvalue().encode()


# --------------------------------------------------------------------------------------------
# HTML

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#222;
  background:#fafafa}
header,main,footer{max-width:1200px;margin:0 auto;padding:0 20px}
header{padding-top:18px}h1{font-size:22px;margin:0 0 4px}h2{font-size:18px;margin:28px 0 8px;
  border-bottom:1px solid #ddd;padding-bottom:4px}h3{font-size:15px;margin:18px 0 6px}
.muted{color:#666}.cards{display:flex;flex-wrap:wrap;gap:10px;margin:12px 0}
.card{background:#fff;border:1px solid #ddd;border-radius:6px;padding:8px 14px;min-width:110px}
.card b{display:block;font-size:22px}.card.bad b{color:#b5361c}
table{border-collapse:collapse;background:#fff;width:100%;font-size:13px}
th,td{border:1px solid #e2e2e2;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f0f0f0;position:sticky;top:0}table.sortable th{cursor:pointer;user-select:none}
table.sortable th:after{content:" \\2195";color:#aaa}td.num{text-align:right;
  font-variant-numeric:tabular-nums}.bar{display:inline-block;height:8px;background:#b5361c;
  vertical-align:middle;margin-right:6px}dl.kv{display:grid;grid-template-columns:max-content 1fr;
  gap:2px 14px;margin:0}dl.kv dt{color:#666}dl.kv dd{margin:0;word-break:break-all}
.pair{background:#fff;border:1px solid #ddd;border-radius:6px;padding:10px 14px;margin:14px 0}
.pair .figs{display:flex;flex-wrap:wrap;gap:12px;align-items:flex-start}
.pair img,.series img{max-width:100%;height:auto}.series{display:flex;flex-wrap:wrap;gap:10px}
.series figure{margin:0;background:#fff;border:1px solid #ddd;border-radius:6px;padding:4px}
.note{background:#fff8e1;border:1px solid #f0d98c;padding:6px 10px;border-radius:4px}
footer{margin-top:30px;padding-bottom:30px;font-size:12px;color:#666}
code{font-size:12px;word-break:break-all}
"""

_JS = """
document.querySelectorAll("table.sortable").forEach(function (table) {
  table.querySelectorAll("th").forEach(function (th, col) {
    th.addEventListener("click", function () {
      var asc = th.getAttribute("data-dir") !== "asc";
      table.querySelectorAll("th").forEach(function (h) { h.removeAttribute("data-dir"); });
      th.setAttribute("data-dir", asc ? "asc" : "desc");
      var body = table.tBodies[0];
      var key = function (row) {
        var cell = row.cells[col];
        return cell.hasAttribute("data-v") ? cell.getAttribute("data-v") : cell.textContent;
      };
      var rows = Array.prototype.slice.call(body.rows);
      rows.sort(function (a, b) {
        var x = key(a).trim(), y = key(b).trim(), nx = Number(x), ny = Number(y);
        var c = (x !== "" && y !== "" && !isNaN(nx) && !isNaN(ny)) ? nx - ny : x.localeCompare(y);
        return asc ? c : -c;
      });
      rows.forEach(function (r) { body.appendChild(r); });
    });
  });
});
window.addEventListener("load", function () {
  var imgs = Array.prototype.slice.call(document.images);
  var broken = imgs.filter(function (i) { return !(i.complete && i.naturalWidth > 0); });
  var body = document.body;
  body.setAttribute("data-images", String(imgs.length));
  body.setAttribute("data-broken-images", String(broken.length));
  body.setAttribute("data-table-rows",
                    String(document.querySelectorAll("#pairs-table tbody tr").length));
  body.setAttribute("data-status", broken.length ? "broken-images" : "ok");
});
"""



def _img(src: str | None, alt: str, width: int | None = None) -> str:
  if not src:
    return ""
  w = f' width="{width}"' if width else ""
  return f'<img src="{_e(src)}" alt="{_e(alt)}" loading="eager"{w}>'


def _td(content, sort_value=None, num: bool = False) -> str:
  """A table cell of ready HTML; `sort_value` (escaped here) is what the table sorts on."""
  cls = ' class="num"' if num or sort_value is not None and not isinstance(sort_value, str) else ""
  v = f' data-v="{_e(sort_value)}"' if sort_value is not None else ""
  return f"<td{cls}{v}>{content}</td>"


def _kv(items: list[tuple[str, str]]) -> str:
  return '<dl class="kv">' + "".join(f"<dt>{_e(k)}</dt><dd>{v}</dd>" for k, v in items) + "</dl>"


def _head(summary: dict) -> list[str]:
  title = f"changesweep report: {summary.get('run_id', '')}"
  return [
      "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
      '<meta name="viewport" content="width=device-width, initial-scale=1">',
      f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>",
      f"<header><h1>{_e(title)}</h1>",
      f'<div class="muted">archive <code>{_e(summary.get("archive"))}</code> &middot; output '
      f'<code>{_e(summary.get("output"))}</code></div></header><main>']


def _rows_link(summary: dict, base: str) -> str:
  """Where the pair rows are: a link to OUT/pairs/ where a browser can follow one."""
  pairs = os.path.join(summary.get("output") or "..", "pairs")
  link = href(pairs, base)
  where = f'<a href="{_e(link)}/">pairs/</a>' if link else f"<code>{_e(pairs)}/</code>"
  return f'{where} (Parquet + JSONL), all pairs sorted: <a href="pairs.csv">pairs.csv</a>'


def _summary(summary: dict, base: str, notes: Iterable[str]) -> list[str]:
  counts = summary.get("counts", {})
  model = summary.get("model", {})
  out = ['<section id="summary"><h2>Run summary</h2><div class="cards">']
  for key, label in (("locations", "locations"), ("pairs", "pairs scored"),
                     ("chips", "chips"), ("first_captures", "first captures"),
                     ("dead_letters", "dead letters")):
    bad = " bad" if key == "dead_letters" and counts.get(key) else ""
    out.append(f'<div class="card{bad}"><b>{_e(counts.get(key, "–"))}</b>{_e(label)}</div>')
  out.append("</div>")
  metrics = summary.get("metrics") or {}
  out.append(_kv([
      ("model", f"{_e(model.get('id'))} v{_e(model.get('version'))} "
                f"<span class=muted>({_e(model.get('path'))})</span>"),
      ("bands", _e(", ".join(model.get("bands") or []))),
      *((f"model {m.get('model_id')}", _e(f"{m.get('pairs')} pairs: {m.get('why')}"))
        for m in summary.get("models_used") or []),
      ("statistics", _e(summary.get("statistics"))),
      ("run id", _e(summary.get("run_id"))),
      ("rows", _rows_link(summary, base)),
  ]))
  if metrics:
    out.append("<details><summary>Beam metrics</summary><table><tbody>" + "".join(
        f'<tr><td>{_e(k)}</td><td class="num">{_e(v)}</td></tr>' for k, v in metrics.items())
        + "</tbody></table></details>")
  out += [f'<p class="note">{_e(n)}</p>' for n in notes]
  out.append("</section>")
  return out


def _pair_row(rank: int, r: dict, figures: dict[str, dict], base: str) -> str:
  score = r.get("change_score")
  pid = _e(r.get("pair_id"))
  anchor = (f'<a href="#pair-{pid}">{_e(r.get("location"))}</a>'
            if r.get("pair_id") in figures else _e(r.get("location")))
  if r.get("shift_flagged"):
    anchor += (f' <a class="flag" href="#flagged" title="misregistered by '
               f'{_e(_shift(r))} px: score not to be trusted">flagged</a>')
  map_href = href(r.get("change_map_uri"), base)
  map_link = f'<a href="{_e(map_href)}">GeoTIFF</a>' if map_href else "–"
  bar = f'<span class="bar" style="width:{int(40 * (score or 0))}px"></span>'
  before, after = r.get("before_captured_at") or "", r.get("after_captured_at") or ""
  cells = [_td(rank, num=True), _td(anchor), _td(_e(before[:10]), before),
           _td(_e(after[:10]), after), _td(bar + _fmt(score), -1 if score is None else score),
           _td(_pct(r.get("changed_fraction")), r.get("changed_fraction") or 0),
           _td(_e(r.get("changed_pixels")), num=True),
           _td(_pct(r.get("valid_fraction")), r.get("valid_fraction") or 0),
           _td(len(r.get("regions") or []), num=True), _td(map_link),
           _td(f"<code>{pid}</code>")]
  return f'<tr data-pair-id="{pid}">{"".join(cells)}</tr>'


def _shift(r: dict) -> str:
  shift = r.get("shift_px") or {}
  return f"{_fmt(shift.get('dx'), 1)}, {_fmt(shift.get('dy'), 1)}" if shift else "–"


def _flagged(ranked: list[dict], max_rows: int) -> list[str]:
  """The pairs whose measured misregistration is past the bound `--coregister` corrects."""
  flagged = [r for r in ranked if r.get("shift_flagged")]
  if not flagged:
    return []
  out = [f'<section id="flagged"><h2>Flagged pairs ({len(flagged)})</h2><p class="note">The '
         "later capture is shifted against the earlier one by more than --coregister corrects "
         "(8 px): a wrong georeference or another rectification, not a residual. Their scores "
         "are not to be trusted as they are.</p>"
         '<table id="flagged-table" class="sortable"><thead><tr><th>location</th>'
         "<th>before</th><th>after</th><th>shift dx, dy (px)</th><th>change score</th>"
         "<th>pair id</th></tr></thead><tbody>"]
  for r in flagged[:max_rows]:
    out.append(f"<tr><td>{_e(r.get('location'))}</td>"
               f"<td>{_e((r.get('before_captured_at') or '')[:10])}</td>"
               f"<td>{_e((r.get('after_captured_at') or '')[:10])}</td><td>{_e(_shift(r))}</td>"
               f"<td>{_fmt(r.get('change_score'))}</td><td><code>{_e(r.get('pair_id'))}"
               "</code></td></tr>")
  out.append("</tbody></table></section>")
  return out


def _pairs_table(ranked: list[dict], figures: dict[str, dict], max_rows: int,
                 base: str) -> list[str]:
  shown = ranked[:max_rows]
  out = ['<section id="pairs"><h2>Pairs by change score</h2>']
  if len(ranked) > len(shown):
    out.append(f'<p class="note">Showing the top {len(shown)} of {len(ranked)} pairs; all of '
               f'them, in this order, are in <a href="pairs.csv">pairs.csv</a>.</p>')
  out.append('<p class="muted">Click a column to sort. Change score: mean change probability '
             'of the 1% most changed valid pixels.</p>')
  headers = ("#", "location", "before", "after", "change score", "changed", "changed px",
             "valid", "regions", "change map", "pair id")
  out.append('<table id="pairs-table" class="sortable"><thead><tr>'
             + "".join(f"<th>{h}</th>" for h in headers) + "</tr></thead><tbody>")
  out += [_pair_row(rank, r, figures, base) for rank, r in enumerate(shown, 1)]
  out.append("</tbody></table></section>")
  return out


def _top_pairs(top: list[dict], figures: dict[str, dict], base: str = ".") -> list[str]:
  out = [f'<section id="top"><h2>Top {len(top)} changes</h2>']
  if not top:
    out.append('<p class="muted">No pair was scored.</p>')
  for rank, r in enumerate(top, 1):
    f = figures.get(r.get("pair_id"), {})
    before, after = r.get("before_captured_at") or "", r.get("after_captured_at") or ""
    out.append(f'<div class="pair" id="pair-{_e(r.get("pair_id"))}">'
               f'<h3>#{rank} {_e(r.get("location"))}: {_e(before[:10])}'
               f' &rarr; {_e(after[:10])}, score '
               f'{_fmt(r.get("change_score"))}, {_pct(r.get("changed_fraction"))} changed</h3>')
    out.append('<div class="figs">')
    out.append(_img(f.get("quicklook"), f"before, after and change of {r.get('location')}"))
    out.append(_img(f.get("regions"), f"change regions of {r.get('location')}"))
    out.append("</div>")
    if f.get("error"):
      out.append(f'<p class="note">{_e(f["error"])}</p>')
    links = [(label, href(uri, base)) for label, uri in f.get("links") or []]
    if any(url for _, url in links):
      out.append('<div class="links">' + " &middot; ".join(
          f'<a href="{_e(url)}">{_e(label)}</a>' for label, url in links if url) + "</div>")
    out.append(f'<div class="muted">before <code>{_e(r.get("before_uri"))}</code><br>after '
               f'<code>{_e(r.get("after_uri"))}</code><br>CRS {_e(r.get("crs") or "none")}'
               f', {_e(r.get("width"))}&times;{_e(r.get("height"))} px, '
               f'{len(r.get("regions") or [])} regions</div></div>')
  out.append("</section>")
  return out


def _series(series: Iterable[tuple[str, str]]) -> list[str]:
  series = list(series)
  out = ['<section id="series"><h2>Change score over time</h2>']
  if series:
    out.append('<p class="muted">Per location of the top pairs: the change score of each pair '
               'at the date of its later capture.</p><div class="series">')
    out += [f"<figure>{_img(src, f'change score over time at {loc}')}</figure>"
            for loc, src in series]
    out.append("</div>")
  else:
    out.append('<p class="muted">No scored pairs.</p>')
  out.append("</section>")
  return out


def _dead_letters(dead: list[dict], max_rows: int) -> list[str]:
  out = [f'<section id="dead"><h2>Dead letters ({len(dead)})</h2>']
  if dead:
    out.append('<table id="dead-table" class="sortable"><thead><tr><th>stage</th>'
               "<th>location</th><th>reason</th><th>uri</th></tr></thead><tbody>")
    for d in dead[:max_rows]:
      out.append(f"<tr><td>{_e(d.get('stage'))}</td><td>{_e(d.get('location'))}</td>"
                 f"<td>{_e(d.get('reason'))}</td><td><code>{_e(d.get('uri'))}</code></td></tr>")
    out.append("</tbody></table>")
    if len(dead) > max_rows:
      out.append(f'<p class="note">Showing {max_rows} of {len(dead)}; all are in '
                 f'<code>dead_letter/</code>.</p>')
  else:
    out.append('<p class="muted">Every input was used.</p>')
  out.append("</section></main>")
  return out


def render_html(summary: dict, ranked: list[dict], dead: list[dict],
                figures: dict[str, dict] | None = None, series: Iterable[tuple[str, str]] = (),
                *, top_n: int = 20, max_rows: int = DEFAULT_MAX_ROWS,
                attribution: str = DEFAULT_ATTRIBUTION, base: str = ".",
                notes: Iterable[str] = ()) -> str:
  """The report page. Pure: every input is data, every archive-provided string is escaped.

  Args:
    summary: the sweep's run.json.
    ranked: pair rows, highest change score first (`rank_pairs`).
    dead: dead-letter rows.
    figures: by pair_id, {"quicklook": src, "regions": src, "error": text} for the top pairs.
    series: (location, src) of the per-location time-series charts.
    top_n: pairs shown with quicklooks.
    max_rows: rows of the pairs table; the rest is in pairs.csv.
    attribution: imagery credit printed in the footer.
    base: the report folder, for relative links to outputs.
    notes: sentences shown under the summary (images that could not be drawn, ...).

  Returns:
    The page's HTML.
  """
  figures = figures or {}
  out = [*_head(summary), *_summary(summary, base, notes), *_flagged(ranked, max_rows),
         *_pairs_table(ranked, figures, max_rows, base),
         *_top_pairs(ranked[:top_n], figures, base),
         *_series(series), *_dead_letters(dead, max_rows)]
  out.append(f"<footer>Generated by changesweep on "
             f"{dt.datetime.now(dt.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}. "
             f"Imagery: {_e(attribution)}.</footer>")
  out.append(f"<script>{_JS}</script></body></html>")
  return "\n".join(out) + "\n"
