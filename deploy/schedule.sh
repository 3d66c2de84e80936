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

# The launch request (projects.locations.flexTemplates.launch). Parameters are fixed, so the
# output folder uses {date}: the sweep replaces it with the UTC date when it starts.
BODY="$(python3 - <<PY
import json
params = {"output": "gs://${BUCKET}/sweeps/{date}", "state": "gs://${BUCKET}/state/changesweep.jsonl",
          "statistics": "model"}
if "${ARCHIVE}": params["input"] = "${ARCHIVE}"
if "${MANIFEST}": params["manifest"] = "${MANIFEST}"
if "${BQ_TABLE}": params["bigquery_table"] = "${BQ_TABLE}"
if "${GPU_TYPE}":
    params.update(gpu_type="${GPU_TYPE}", gpu_count="${GPU_COUNT}", gpu_mode="hints")
    if "${GPU_MACHINE_TYPE}": params["gpu_machine_type"] = "${GPU_MACHINE_TYPE}"
print(json.dumps({"launchParameter": {
    "jobName": "${NAME}",
    "containerSpecGcsPath": "gs://${BUCKET}/templates/changesweep.json",
    "parameters": params,
    "environment": {"tempLocation": "gs://${BUCKET}/tmp", "stagingLocation": "gs://${BUCKET}/staging",
                    "machineType": "${MACHINE_TYPE}", "maxWorkers": int("${MAX_WORKERS}"),
                    "serviceAccountEmail": "${SERVICE_ACCOUNT}"}}}))
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
