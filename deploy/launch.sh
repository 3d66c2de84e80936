#!/usr/bin/env bash
# Runs a changesweep sweep on Dataflow from a Flex Template: builds and pushes the worker image,
# publishes the template, launches the job. CPU workers list, read and normalise; GPU workers
# (--gpu-type) run inference. See deploy/README.md and README.md "Run on Dataflow".
#
#   deploy/launch.sh --project my-proj --region us-central1 --bucket my-bucket \
#       --archive gs://my-bucket/archive --gpu-type nvidia-l4 --gpu-machine-type g2-standard-8 \
#       --bigquery-table my-proj:changesweep.pairs --setup
set -euo pipefail

usage() {
  cat <<'USAGE'
usage: deploy/launch.sh --project P --region R --bucket B (--archive gs://... | --manifest gs://...) [options]

required:
  --project ID              GCP project (Dataflow, Artifact Registry, BigQuery enabled)
  --region REGION           Dataflow region, e.g. us-central1 (must offer the GPU type)
  --bucket NAME             GCS bucket for templates, temp files, outputs and state (no gs://)
  --archive gs://...        archive root (with --layout), or
  --manifest gs://...       CSV/JSONL manifest of captures (best for millions of files)
options:
  --layout TEMPLATE         path template under --archive (default {location}/{date}.tif)
  --output gs://...         output folder (default gs://BUCKET/sweeps/{date}: {date} = UTC day)
  --model gs://...          model directory (default: the model shipped in the image)
  --machine-type TYPE       CPU worker machine type (default n1-standard-4)
  --max-workers N           autoscaling cap (default 20)
  --gpu-type TYPE           GPU for inference: nvidia-tesla-t4, nvidia-l4, ... (default: CPU only)
  --gpu-count N             GPUs per GPU worker (default 1)
  --gpu-machine-type TYPE   GPU pool machine type with --gpu-mode hints (g2-standard-8 for L4)
  --gpu-mode hints|job      hints: only inference on GPU workers (default); job: all workers
  --bigquery-table P:D.T    also load pair rows into BigQuery (read them via the T_latest view)
  --state gs://...          incremental: state file (default gs://BUCKET/state/changesweep.jsonl)
  --no-state                score every pair of the archive
  --since YYYY-MM-DD        only pairs whose later capture is on/after this date
  --force                   re-score pairs the state says are done
  --statistics archive|model  normalisation statistics (default model: stable night to night)
  --image URI               worker image (default REGION-docker.pkg.dev/PROJECT/changesweep/worker:TAG)
  --tag TAG                 image tag (default: git short sha, else latest)
  --no-build                use an already pushed --image
  --setup                   first run: enable APIs, create the Artifact Registry repo, the
                            bucket and the BigQuery dataset, table and view (idempotent)
  --service-account EMAIL   worker service account
  --dry-run                 print the commands instead of running them
USAGE
}

PROJECT="" REGION="" BUCKET="" ARCHIVE="" MANIFEST="" LAYOUT="" OUTPUT="" MODEL=""
MACHINE_TYPE="n1-standard-4" MAX_WORKERS="20" GPU_TYPE="" GPU_COUNT="1" GPU_MACHINE_TYPE=""
GPU_MODE="hints" BQ_TABLE="" STATE="" NO_STATE="" SINCE="" FORCE="" STATISTICS="model"
IMAGE="" TAG="" BUILD=1 SETUP="" SERVICE_ACCOUNT="" DRY_RUN=""

while [[ $# -gt 0 ]]; do
  case "$1" in
    --project) PROJECT="$2"; shift 2 ;;
    --region) REGION="$2"; shift 2 ;;
    --bucket) BUCKET="${2#gs://}"; shift 2 ;;
    --archive) ARCHIVE="$2"; shift 2 ;;
    --manifest) MANIFEST="$2"; shift 2 ;;
    --layout) LAYOUT="$2"; shift 2 ;;
    --output) OUTPUT="$2"; shift 2 ;;
    --model) MODEL="$2"; shift 2 ;;
    --machine-type) MACHINE_TYPE="$2"; shift 2 ;;
    --max-workers) MAX_WORKERS="$2"; shift 2 ;;
    --gpu-type) GPU_TYPE="$2"; shift 2 ;;
    --gpu-count) GPU_COUNT="$2"; shift 2 ;;
    --gpu-machine-type) GPU_MACHINE_TYPE="$2"; shift 2 ;;
    --gpu-mode) GPU_MODE="$2"; shift 2 ;;
    --bigquery-table) BQ_TABLE="$2"; shift 2 ;;
    --state) STATE="$2"; shift 2 ;;
    --no-state) NO_STATE=1; shift ;;
    --since) SINCE="$2"; shift 2 ;;
    --force) FORCE=1; shift ;;
    --statistics) STATISTICS="$2"; shift 2 ;;
    --image) IMAGE="$2"; shift 2 ;;
    --tag) TAG="$2"; shift 2 ;;
    --no-build) BUILD=""; shift ;;
    --setup) SETUP=1; shift ;;
    --service-account) SERVICE_ACCOUNT="$2"; shift 2 ;;
    --dry-run) DRY_RUN=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "launch.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
  esac
done

die() { echo "launch.sh: $*" >&2; exit 2; }
[[ -n "$PROJECT" ]] || die "--project is required"
[[ -n "$REGION" ]] || die "--region is required"
[[ -n "$BUCKET" ]] || die "--bucket is required"
[[ -n "$ARCHIVE" || -n "$MANIFEST" ]] || die "give --archive gs://... or --manifest gs://..."
[[ -z "$ARCHIVE" || -z "$MANIFEST" ]] || die "give only one of --archive and --manifest"
[[ "$GPU_MODE" == hints || "$GPU_MODE" == job ]] || die "--gpu-mode is hints or job"
# BigQuery table ids: PROJECT:DATASET.TABLE as the sweep takes them (the project optionally
# domain-scoped, example.com:proj); PROJECT.DATASET.TABLE is accepted and passed on as
# PROJECT:DATASET.TABLE. The parts go into SQL and bq commands.
TABLE_ID='^((([a-z0-9-]+\.)+[a-z]{2,}:)?[a-z][a-z0-9-]{4,28}[a-z0-9])[:.]([A-Za-z0-9_]+)\.([A-Za-z0-9_-]+)$'
if [[ -n "$BQ_TABLE" ]]; then
  [[ "$BQ_TABLE" =~ $TABLE_ID ]] || die "--bigquery-table must be PROJECT:DATASET.TABLE, got '$BQ_TABLE'"
  BQ_PROJECT="${BASH_REMATCH[1]}" BQ_DATASET="${BASH_REMATCH[4]}" BQ_NAME="${BASH_REMATCH[5]}"
  BQ_TABLE="${BQ_PROJECT}:${BQ_DATASET}.${BQ_NAME}"
fi

run() {  # prints the command; runs it unless --dry-run
  printf '+'; printf ' %q' "$@"; printf '\n'
  [[ -n "$DRY_RUN" ]] || "$@"
}

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [[ -z "$TAG" ]]; then
  TAG="$(git -C "$REPO_ROOT" rev-parse --short HEAD 2>/dev/null || echo latest)"
fi
IMAGE="${IMAGE:-${REGION}-docker.pkg.dev/${PROJECT}/changesweep/worker:${TAG}}"
OUTPUT="${OUTPUT:-gs://${BUCKET}/sweeps/{date}}"
if [[ -z "$NO_STATE" ]]; then STATE="${STATE:-gs://${BUCKET}/state/changesweep.jsonl}"; else STATE=""; fi
TEMPLATE="gs://${BUCKET}/templates/changesweep.json"
# Template parameters go to gcloud as one '~'-separated list (see PARAMS below).
for v in OUTPUT STATISTICS ARCHIVE MANIFEST LAYOUT MODEL STATE SINCE GPU_TYPE GPU_COUNT \
         GPU_MACHINE_TYPE; do
  [[ "${!v}" != *"~"* ]] || die "--$(echo "$v" | tr 'A-Z_' 'a-z-') must not hold '~' (it separates template parameters), got '${!v}'"
done

if [[ -z "$DRY_RUN" ]]; then
  command -v gcloud >/dev/null || die "needs the gcloud CLI (https://cloud.google.com/sdk)"
  [[ -z "$BUILD" ]] || command -v docker >/dev/null || die "needs docker to build the image (or --no-build --image URI)"
  command -v python3 >/dev/null || die "needs python3 to render the template spec"
fi

if [[ -n "$SETUP" ]]; then
  run gcloud services enable dataflow.googleapis.com compute.googleapis.com \
      artifactregistry.googleapis.com bigquery.googleapis.com storage.googleapis.com \
      --project "$PROJECT"
  if [[ -n "$DRY_RUN" ]] || ! gcloud artifacts repositories describe changesweep \
      --location "$REGION" --project "$PROJECT" >/dev/null 2>&1; then
    run gcloud artifacts repositories create changesweep --repository-format docker \
        --location "$REGION" --project "$PROJECT"
  fi
  if [[ -n "$DRY_RUN" ]] || ! gcloud storage buckets describe "gs://${BUCKET}" \
      --project "$PROJECT" >/dev/null 2>&1; then
    run gcloud storage buckets create "gs://${BUCKET}" --location "$REGION" --project "$PROJECT"
  fi
  if [[ -n "$BQ_TABLE" ]]; then
    if [[ -n "$DRY_RUN" ]] || ! bq --project_id "$BQ_PROJECT" show "$BQ_DATASET" >/dev/null 2>&1; then
      run bq --project_id "$BQ_PROJECT" mk --dataset --location "$REGION" "${BQ_PROJECT}:${BQ_DATASET}"
    fi
    FQ="${BQ_PROJECT}.${BQ_DATASET}.${BQ_NAME}"
    for sql in pairs.sql pairs_latest_view.sql; do
      DDL="$(<"$REPO_ROOT/deploy/bigquery/$sql")"
      # a quoted replacement is taken literally (no '&', no sed)
      run bq --project_id "$BQ_PROJECT" query --use_legacy_sql=false --location "$REGION" \
          "${DDL//PROJECT_ID.DATASET.TABLE/"$FQ"}"
    done
  fi
fi

if [[ -n "$BUILD" ]]; then
  run gcloud auth configure-docker "${REGION}-docker.pkg.dev" --quiet
  run docker build -f "$REPO_ROOT/deploy/Dockerfile" -t "$IMAGE" "$REPO_ROOT"
  run docker push "$IMAGE"
fi

# The template spec: this image for the launcher and the workers, deploy/metadata.json inlined.
SPEC="$(mktemp -t changesweep-template.XXXXXX.json)"
trap 'rm -f "$SPEC"' EXIT
python3 "$REPO_ROOT/deploy/render_template.py" "$IMAGE" > "$SPEC"
run gcloud storage cp "$SPEC" "$TEMPLATE" --project "$PROJECT"

# Template parameters are the sweep's own flags (pipeline/options.py); ^~^ makes ~ the
# separator so values may hold commas.
PARAMS="output=${OUTPUT}~statistics=${STATISTICS}"
[[ -z "$ARCHIVE" ]] || PARAMS+="~input=${ARCHIVE}"
[[ -z "$MANIFEST" ]] || PARAMS+="~manifest=${MANIFEST}"
[[ -z "$LAYOUT" ]] || PARAMS+="~layout=${LAYOUT}"
[[ -z "$MODEL" ]] || PARAMS+="~model=${MODEL}"
[[ -z "$BQ_TABLE" ]] || PARAMS+="~bigquery_table=${BQ_TABLE}"
[[ -z "$STATE" ]] || PARAMS+="~state=${STATE}"
[[ -z "$SINCE" ]] || PARAMS+="~since=${SINCE}"
[[ -z "$FORCE" ]] || PARAMS+="~force=true"
if [[ -n "$GPU_TYPE" ]]; then
  PARAMS+="~gpu_type=${GPU_TYPE}~gpu_count=${GPU_COUNT}~gpu_mode=${GPU_MODE}"
  [[ -z "$GPU_MACHINE_TYPE" ]] || PARAMS+="~gpu_machine_type=${GPU_MACHINE_TYPE}"
fi

JOB="changesweep-$(date -u +%Y%m%d-%H%M%S)"
EXTRA=()
[[ -z "$SERVICE_ACCOUNT" ]] || EXTRA+=(--service-account-email "$SERVICE_ACCOUNT")
run gcloud dataflow flex-template run "$JOB" \
    --project "$PROJECT" --region "$REGION" \
    --template-file-gcs-location "$TEMPLATE" \
    --temp-location "gs://${BUCKET}/tmp" --staging-location "gs://${BUCKET}/staging" \
    --worker-machine-type "$MACHINE_TYPE" --max-workers "$MAX_WORKERS" \
    ${EXTRA[@]+"${EXTRA[@]}"} \
    --parameters "^~^${PARAMS}"
echo "launch.sh: job $JOB submitted; watch it at https://console.cloud.google.com/dataflow/jobs?project=${PROJECT}"
