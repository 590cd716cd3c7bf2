"""TRELLIS.2 image-to-3D backend: our own PyTorch implementation of microsoft/TRELLIS.2's
inference path (sparse-structure flow, shape/texture structured-latent flows, sparse decoders),
loading the official weights. No compiled extension: sparse convolution, attention and hashing are
plain PyTorch (Triton only as a tested fast path)."""
