"""Package data: the ImageNet coarse-group file of the CLIP prior (imagenet_coarse.json)."""
