"""Pure maths under the layers: masks, Fourier crop/pad and the depthwise convolution backends."""
