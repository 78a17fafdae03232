"""What runs without a worker.

Replay, the reference run, the verifier, personas, quality, calibration, health checks, and
the demo (the one tool that starts a worker).
"""
