"""faceswap-GAN: a shared encoder, one decoder per identity (face + attention mask),
PatchGAN critics; data from extract folders, training, export and batched inference.

Submodules are imported where needed; importing this package loads nothing heavy.
"""
