"""Label suggestions, out-of-fold scores, calibration, label issues, review queues and review decisions."""
