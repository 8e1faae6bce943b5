"""A tiny softlabels plugin: importing it registers the model ``example_cnn`` and the dataset ``blobs``."""
from softlabels_example import blobs, model  # noqa: F401  (the imports register them)
