"""The model registry: a versioned, content-addressed, signed model store on disk, its
HTTP API (Flask behind waitress), retained MQTT announcements and a client.

Nothing here imports TensorFlow: the registry image and the edge use it without.
"""
