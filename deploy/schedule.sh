#!/usr/bin/env bash
# Nightly incremental sweeps: a Cloud Scheduler job that launches the Flex Template published by
# deploy/launch.sh (run that once first) every night at 02:00 UTC. Each night pairs only new
# captures (--state), writes its files under gs://BUCKET/sweeps/<that night's date> and appends
# its pair rows to BigQuery (read them through the TABLE_latest view).
#
#   deploy/schedule.sh --project my-proj --region us-central1 --bucket my-bucket \
#       --archive gs://my-bucket/archive --bigquery-table my-proj:changesweep.pairs \
#       --gpu-type nvidia-l4 --gpu-machine-type g2-standard-8 \
#       --service-account sweeper@my-proj.iam.gserviceaccount.com
#
# The service account needs roles/dataflow.admin (launch), roles/iam.serviceAccountUser on the
# worker service account, and the workers need storage and BigQuery access.
set -euo pipefail

PROJECT="" REGION="" BUCKET="" ARCHIVE="" MANIFEST="" BQ_TABLE="" SERVICE_ACCOUNT=""
GPU_TYPE="" GPU_COUNT="1" GPU_MACHINE_TYPE="" MACHINE_TYPE="n1-standard-4" MAX_WORKERS="20"
SCHEDULE="0 2 * * *" NAME="changesweep-nightly" DRY_RUN=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --project) PROJECT="$2"; shift 2 ;;
    --region) REGION="$2"; shift 2 ;;
    --bucket) BUCKET="${2#gs://}"; shift 2 ;;
    --archive) ARCHIVE="$2"; shift 2 ;;
    --manifest) MANIFEST="$2"; shift 2 ;;
    --bigquery-table) BQ_TABLE="$2"; shift 2 ;;
    --service-account) SERVICE_ACCOUNT="$2"; shift 2 ;;
    --gpu-type) GPU_TYPE="$2"; shift 2 ;;
    --gpu-count) GPU_COUNT="$2"; shift 2 ;;
    --gpu-machine-type) GPU_MACHINE_TYPE="$2"; shift 2 ;;
    --machine-type) MACHINE_TYPE="$2"; shift 2 ;;
    --max-workers) MAX_WORKERS="$2"; shift 2 ;;
    --schedule) SCHEDULE="$2"; shift 2 ;;
    --name) NAME="$2"; shift 2 ;;
    --dry-run) DRY_RUN=1; shift ;;
    *) echo "schedule.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
for v in PROJECT REGION BUCKET SERVICE_ACCOUNT; do
  [[ -n "${!v}" ]] || { echo "schedule.sh: --$(echo "$v" | tr 'A-Z_' 'a-z-') is required" >&2; exit 2; }
done
[[ -n "$ARCHIVE" || -n "$MANIFEST" ]] || { echo "schedule.sh: give --archive or --manifest" >&2; exit 2; }

die() { echo "schedule.sh: $*" >&2; exit 2; }
[[ "$MAX_WORKERS" =~ ^[1-9][0-9]*$ ]] || die "--max-workers must be a whole number, got '$MAX_WORKERS'"
[[ "$GPU_COUNT" =~ ^[1-9][0-9]*$ ]] || die "--gpu-count must be a whole number, got '$GPU_COUNT'"
# BigQuery table ids: PROJECT:DATASET.TABLE as the sweep takes them (the project optionally
# domain-scoped, example.com:proj); PROJECT.DATASET.TABLE is accepted and passed on as
# PROJECT:DATASET.TABLE.
TABLE_ID='^((([a-z0-9-]+\.)+[a-z]{2,}:)?[a-z][a-z0-9-]{4,28}[a-z0-9])[:.]([A-Za-z0-9_]+)\.([A-Za-z0-9_-]+)$'
if [[ -n "$BQ_TABLE" ]]; then
  [[ "$BQ_TABLE" =~ $TABLE_ID ]] || die "--bigquery-table must be PROJECT:DATASET.TABLE, got '$BQ_TABLE'"
  BQ_TABLE="${BASH_REMATCH[1]}:${BASH_REMATCH[4]}.${BASH_REMATCH[5]}"
fi

# The launch request (projects.locations.flexTemplates.launch). Parameters are fixed, so the
# output folder uses {date}: the sweep replaces it with the UTC date when it starts. The flag
# values reach Python as data (environment variables), never as source text.
BODY="$(CS_BUCKET="$BUCKET" CS_ARCHIVE="$ARCHIVE" CS_MANIFEST="$MANIFEST" CS_BQ_TABLE="$BQ_TABLE" \
  CS_GPU_TYPE="$GPU_TYPE" CS_GPU_COUNT="$GPU_COUNT" CS_GPU_MACHINE_TYPE="$GPU_MACHINE_TYPE" \
  CS_NAME="$NAME" CS_MACHINE_TYPE="$MACHINE_TYPE" CS_MAX_WORKERS="$MAX_WORKERS" \
  CS_SERVICE_ACCOUNT="$SERVICE_ACCOUNT" python3 - <<'PY'
import json
import os

v = {k[len("CS_"):].lower(): os.environ[k] for k in os.environ if k.startswith("CS_")}
bucket = "gs://" + v["bucket"]
params = {"output": f"{bucket}/sweeps/{{date}}", "state": f"{bucket}/state/changesweep.jsonl",
          "statistics": "model"}
for flag, param in (("archive", "input"), ("manifest", "manifest"),
                    ("bq_table", "bigquery_table")):
  if v[flag]:
    params[param] = v[flag]
if v["gpu_type"]:
  params.update(gpu_type=v["gpu_type"], gpu_count=v["gpu_count"], gpu_mode="hints")
  if v["gpu_machine_type"]:
    params["gpu_machine_type"] = v["gpu_machine_type"]
print(json.dumps({"launchParameter": {
    "jobName": v["name"],
    "containerSpecGcsPath": f"{bucket}/templates/changesweep.json",
    "parameters": params,
    "environment": {"tempLocation": f"{bucket}/tmp", "stagingLocation": f"{bucket}/staging",
                    "machineType": v["machine_type"], "maxWorkers": int(v["max_workers"]),
                    "serviceAccountEmail": v["service_account"]}}}))
PY
)"
URI="https://dataflow.googleapis.com/v1b3/projects/${PROJECT}/locations/${REGION}/flexTemplates:launch"
CMD=(gcloud scheduler jobs create http "$NAME" --project "$PROJECT" --location "$REGION"
     --schedule "$SCHEDULE" --time-zone "Etc/UTC" --uri "$URI" --http-method POST
     --headers "Content-Type=application/json" --message-body "$BODY"
     --oauth-service-account-email "$SERVICE_ACCOUNT"
     --oauth-token-scope "https://www.googleapis.com/auth/cloud-platform")
printf '+'; printf ' %q' "${CMD[@]}"; printf '\n'
if [[ -z "$DRY_RUN" ]]; then
  gcloud services enable cloudscheduler.googleapis.com --project "$PROJECT"
  "${CMD[@]}"
  echo "schedule.sh: $NAME runs '$SCHEDULE' UTC; run it now with: gcloud scheduler jobs run $NAME --location $REGION --project $PROJECT"
fi
