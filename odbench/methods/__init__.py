"""Method plugins, one module per method; see :mod:`odbench.methods.base`."""
