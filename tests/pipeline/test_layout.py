import pytest

from changesweep.pipeline.layout import Layout, LayoutError, parse_time


@pytest.mark.parametrize("template,path,expected", [
    ("{location}/{date}.tif", "dubai/2015-12-11.tif",
     {"location": "dubai", "captured_at": "2015-12-11T00:00:00"}),
    ("{location}/{date}.tif", "dubai/20151211.tif",
     {"location": "dubai", "captured_at": "2015-12-11T00:00:00"}),
    ("{location}/{date:%Y%m%d}_{band}.tif", "T31UDQ/20200102_B04.tif",
     {"location": "T31UDQ", "band": "B04", "captured_at": "2020-01-02T00:00:00"}),
    ("tiles/{location}/{tile}/{date:%Y-%m-%dT%H%M}.tif", "tiles/farm1/x/2020-05-06T1030.tif",
     {"location": "farm1", "captured_at": "2020-05-06T10:30:00"}),
])
def test_layout_extracts_fields(template, path, expected):
  assert Layout.parse(template).match(path) == expected


def test_layout_glob_lists_only_the_template_shape():
  assert Layout.parse("{location}/{date}.tif").glob == "*/*.tif"
  assert Layout.parse("{location}/{date:%Y%m%d}_{band}.tif").glob == "*/*_*.tif"


@pytest.mark.parametrize("path", ["dubai/not-a-date.tif", "a/b/2015-01-01.tif", "x/2015-13-01.tif"])
def test_layout_rejects_bad_paths_with_reason(path):
  with pytest.raises(LayoutError, match="does not"):
    Layout.parse("{location}/{date}.tif").match(path)


@pytest.mark.parametrize("template", ["{date}.tif", "{location}/x.tif", "/{location}/{date}.tif",
                                      "../{location}/{date}.tif", "{location}/{date}_{date}.tif"])
def test_bad_templates_are_refused(template):
  with pytest.raises(ValueError):
    Layout.parse(template)


def test_times_are_normalised_to_naive_utc():
  assert parse_time("2020-01-02T12:00:00+02:00") == "2020-01-02T10:00:00"
  assert parse_time("2020-01-02") == "2020-01-02T00:00:00"
