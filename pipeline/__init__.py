"""The Beam side of changesweep: options, listing, pairing, chips, scoring, sinks and the graph."""
