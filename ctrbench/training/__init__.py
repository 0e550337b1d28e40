"""One model trained and evaluated: the training loop, its metrics, device and precision."""
