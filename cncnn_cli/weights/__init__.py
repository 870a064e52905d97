"""Weights in and out: self-describing safetensors checkpoints, ImageNet backbones, the authors' released weights."""
