"""The change model: network, training, evaluation, export and classical baselines (no Beam graph)."""
