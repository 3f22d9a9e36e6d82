"""Edge inference: runtimes, MQTT request/response and HTTP, live stream alerts, hot reload.

No TensorFlow is imported anywhere in this package.
"""
