"""BigQuery sink: rows fit the schema, the table is partitioned by capture date and clustered by
location, and the write path runs end to end on Beam's file loads with a fake BigQuery client."""
import json

import apache_beam as beam
import pytest
from apache_beam.io.gcp.internal.clients import bigquery as bq_api
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline

from changesweep.pipeline import bigquery, schemas

TABLE = "changesweep-test:sweeps.pairs"


def sample_value(f: schemas.Field, i: int):
  if f.type == "RECORD":
    return {s.name: sample_value(s, i) for s in f.fields}
  return {"STRING": f"{f.name}-{i}", "INTEGER": i, "FLOAT": 0.5 + i, "BOOLEAN": True,
          "TIMESTAMP": f"2018-03-{10 + i:02d}T10:20:30", "DATE": f"2018-03-{10 + i:02d}",
          "GEOGRAPHY": f"POINT({i} {i / 2})"}[f.type]


def pair_row(i: int, nulls: bool = False) -> dict:
  """A row of every PAIRS field (nullable ones None when `nulls`)."""
  row = {}
  for f in schemas.PAIRS:
    if f.mode == "REPEATED":
      row[f.name] = [sample_value(f, i)] if not nulls else []
    elif f.mode == "NULLABLE" and nulls:
      row[f.name] = None
    else:
      row[f.name] = sample_value(f, i)
  return row


def test_partition_and_cluster_columns_are_in_the_schema():
  fields = {f.name: f for f in schemas.PAIRS}
  params = bigquery.table_parameters()
  assert params == {"timePartitioning": {"type": "DAY", "field": "capture_date"},
                    "clustering": {"fields": ["location"]}}
  assert (fields["capture_date"].type, fields["capture_date"].mode) == ("DATE", "REQUIRED")
  assert (fields["location"].type, fields["location"].mode) == ("STRING", "REQUIRED")
  for key in bigquery.DEDUP_KEY:
    assert fields[key].mode == "REQUIRED" and fields[key].type == "STRING"
  with pytest.raises(ValueError):
    bigquery.table_parameters(partition_field="location")
  with pytest.raises(ValueError):
    bigquery.table_parameters(cluster_fields=("nope",))


@pytest.mark.parametrize("spec,ok", [
    ("my-project:sweeps.pairs", True), ("example.com:my-project:ds.t_1", True),
    ("sweeps.pairs", False), ("my-project:sweeps", False), ("my-project.sweeps.pairs", False),
])
def test_parse_table(spec, ok):
  if ok:
    assert bigquery.parse_table(spec)[2] in ("pairs", "t_1")
  else:
    with pytest.raises(ValueError, match="PROJECT:DATASET.TABLE"):
      bigquery.parse_table(spec)


@pytest.mark.parametrize("nulls", [False, True])
def test_rows_match_the_schema_and_have_no_nan(nulls):
  row = pair_row(1, nulls)
  row["extra_debug_field"] = 1
  if not nulls:
    nullable_float = next(f.name for f in schemas.PAIRS
                          if f.type == "FLOAT" and f.mode == "NULLABLE")
    row[nullable_float] = float("nan")
  out = bigquery.to_bigquery_row(row)
  assert list(out) == [f.name for f in schemas.PAIRS]
  schemas.check_row(out, schemas.PAIRS)
  json.dumps(out, allow_nan=False)  # BigQuery's JSON loader refuses NaN
  if not nulls:
    assert out[nullable_float] is None


class FakeBigQueryClient:
  """Stands in for the BigQuery API client: records load jobs, reports them DONE."""
  inserted: list = []

  def __init__(self):
    self.jobs = self
    self.tables = self

  def Insert(self, request, upload=None):  # noqa: N802 (the API's name)
    FakeBigQueryClient.inserted.append(request)
    ref = bq_api.JobReference(projectId="changesweep-test", jobId=request.job.jobReference.jobId,
                              location="US")
    return bq_api.Job(jobReference=ref)

  def Get(self, request):  # noqa: N802
    status = bq_api.JobStatus(state="DONE")
    return bq_api.Job(jobReference=bq_api.JobReference(projectId="changesweep-test",
                                                       jobId=request.jobId),
                      status=status)


def test_write_path_loads_schema_rows_into_a_partitioned_clustered_table(tmp_path):
  FakeBigQueryClient.inserted.clear()
  rows = [pair_row(i, nulls=i % 2 == 1) for i in range(5)]
  with BeamTestPipeline("FnApiRunner") as p:
    _ = (p | beam.Create(rows) | bigquery.WriteRowsToBigQuery(
        TABLE, test_client=FakeBigQueryClient(), custom_gcs_temp_location=str(tmp_path),
        validate=False))
  loads = [r.job.configuration.load for r in FakeBigQueryClient.inserted
           if r.job.configuration.load]
  assert len(loads) == 1
  load = loads[0]
  dest = load.destinationTable
  assert (dest.projectId, dest.datasetId, dest.tableId) == ("changesweep-test", "sweeps", "pairs")
  assert (load.createDisposition, load.writeDisposition) == ("CREATE_IF_NEEDED", "WRITE_APPEND")
  assert load.sourceFormat == "NEWLINE_DELIMITED_JSON"
  assert load.timePartitioning.field == "capture_date" and load.timePartitioning.type == "DAY"
  assert list(load.clustering.fields) == ["location"]
  sent = {(f.name, f.type, f.mode) for f in load.schema.fields}
  assert sent == {(f.name, f.type, f.mode) for f in schemas.PAIRS}
  # the files the load job reads hold exactly the rows, each fitting the schema
  loaded = []
  for uri in load.sourceUris:
    with open(uri) as f:
      loaded += [json.loads(line) for line in f if line.strip()]
  assert sorted(r["pair_id"] for r in loaded) == sorted(r["pair_id"] for r in rows)
  for r in loaded:
    schemas.check_row(r, schemas.PAIRS)


def test_committed_ddl_is_generated_from_the_schema():
  from tests.conftest import ROOT

  for name, text in bigquery.ddl_files().items():
    with open(f"{ROOT}/deploy/bigquery/{name}") as f:
      assert f.read() == text, (f"deploy/bigquery/{name} is stale: run "
                                "python -m changesweep.pipeline.bigquery deploy/bigquery")
  ddl = bigquery.ddl_files()["pairs.sql"]
  assert "PARTITION BY capture_date" in ddl and "CLUSTER BY location" in ddl
  view = bigquery.ddl_files()["pairs_latest_view.sql"]
  assert "PARTITION BY pair_id, model_id, model_version ORDER BY run_id DESC" in view
