"""What the training loop (train.py) uses but is not the loop: optimisers, densification,
checkpoints, evaluation, phase timing and the per-iteration log."""
