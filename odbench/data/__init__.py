"""Dataset interface, loaders, downloads, generated datasets and statistics."""
