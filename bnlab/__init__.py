"""Course infrastructure: data, models, training, experiments and plots."""
