"""odbench: benchmark and evaluation toolkit for unsupervised object discovery.

Start here: :mod:`odbench.metrics` (the metric core and protocols), :mod:`odbench.registry`
(methods, datasets, protocols by name), :mod:`odbench.methods.center_prior` (the smallest
method plugin) and :mod:`odbench.data.toy` (the smallest dataset).  This module imports
nothing heavy: ``odbench score`` must start without torch.
"""

__version__ = "0.1.0"
