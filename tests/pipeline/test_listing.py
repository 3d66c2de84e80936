import json

from changesweep.pipeline.elements import DeadLetter
from changesweep.pipeline.layout import Layout
from changesweep.pipeline.listing import CaptureFile, entry_from_path, parse_manifest


def test_entry_from_path_is_relative_to_the_root():
  entry = entry_from_path("/a/archive", Layout.parse("{location}/{date}.tif"),
                          "/a/archive/farm/2020-01-01.tif", 10)
  assert entry == CaptureFile("farm", "2020-01-01T00:00:00", None,
                              "/a/archive/farm/2020-01-01.tif", 10,
                              fields=(("date", "2020-01-01"), ("location", "farm")))


def test_csv_manifest_resolves_relative_uris_and_dead_letters_bad_rows():
  text = ("location,captured_at,uri,band\n"
          "farm,2020-01-01,imgs/a.tif,\n"
          "farm,2020-02-01,/abs/b.tif,B04\n"
          "farm,yesterday,imgs/c.tif,\n"
          ",2020-03-01,imgs/d.tif,\n")
  rows = list(parse_manifest("/data/m.csv", text))
  assert rows[0] == CaptureFile("farm", "2020-01-01T00:00:00", None, "/data/imgs/a.tif", -1)
  assert rows[1].band == "B04" and rows[1].uri == "/abs/b.tif"
  assert isinstance(rows[2], DeadLetter) and "yesterday" in rows[2].reason
  assert isinstance(rows[3], DeadLetter) and "location" in rows[3].reason


def test_jsonl_manifest():
  lines = [json.dumps({"location": "l", "captured_at": "2021-06-01T10:00:00Z", "uri": "gs://b/x.tif"}),
           "{not json"]
  rows = list(parse_manifest("gs://b/m.jsonl", "\n".join(lines)))
  assert rows[0] == CaptureFile("l", "2021-06-01T10:00:00", None, "gs://b/x.tif", -1)
  assert isinstance(rows[1], DeadLetter) and "JSON" in rows[1].reason
