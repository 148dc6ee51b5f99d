"""Layers: the four masks, the kernel network, the continuous-kernel convolution and the block."""
