"""The latency server (``device serve``): times the ``.tflite`` bytes it is sent, in a child
process, with the same harness as local timing; imports neither TensorFlow nor MLflow nor Optuna."""
