"""The Beam side of changesweep: options, listing, pairing, chips, scoring, sinks and the graph."""
from changesweep.pipeline import local_workers as _local_workers

# Beam's local subprocess workers import this package with the first DoFn they unpickle.
_local_workers.install_in_worker()
