"""The trainer: recordings in; evaluated, converted, parity-checked, signed models out.

TensorFlow is imported only inside the functions that train and convert
(:mod:`services.trainer.tfkit`), never at package import, so the registry and the
runtime workers (which load tflite_runtime) can live in this package without it.
"""
