"""Renders deploy/flex_template.json into the Flex Template spec that `gcloud dataflow
flex-template run --template-file-gcs-location` reads: the image filled in (launcher and
workers), the parameters' metadata from deploy/metadata.json inlined.

  python3 deploy/render_template.py IMAGE > changesweep.json   (standard library only)
"""
from __future__ import annotations

import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def render(image: str, template_path: str = os.path.join(HERE, "flex_template.json"),
           metadata_path: str = os.path.join(HERE, "metadata.json")) -> dict:
  """The spec as a dict.

  Raises:
    ValueError: an empty image, or a placeholder left unfilled.
  """
  if not image or "${" in image:
    raise ValueError(f"need a container image, got {image!r}")
  with open(template_path) as f:
    text = f.read()
  with open(metadata_path) as f:
    metadata = json.load(f)
  spec = json.loads(text.replace("${IMAGE}", image))
  spec["metadata"] = metadata
  left = json.dumps(spec)
  if "${" in left:
    raise ValueError(f"unfilled placeholder in {template_path}")
  return spec


if __name__ == "__main__":
  if len(sys.argv) != 2:
    sys.exit("usage: render_template.py IMAGE")
  json.dump(render(sys.argv[1]), sys.stdout, indent=2)
  sys.stdout.write("\n")
