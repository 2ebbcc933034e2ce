"""Thin adapters around pretrained backbones (Stable Diffusion, CLIP, DINO, MoCo)."""
