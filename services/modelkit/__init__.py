"""What a model needs on both sides of the loop, with no TensorFlow: bundles, signatures,
and (numpy-only) preprocessing shared by the trainer and the edge."""
