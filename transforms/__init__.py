"""Preprocessing shared by training and the sweep: pure TF/numpy, no Beam graph."""
