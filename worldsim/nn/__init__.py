"""Shared neural-network layers."""

from worldsim.nn.adaln import ActionEmbedder, TimestepEmbedder, modulate  # noqa: F401
from worldsim.nn.attention import Attention, KVCache  # noqa: F401
from worldsim.nn.conv import CausalConv3d, Downsample2d, ResBlock2d, Upsample2d  # noqa: F401
from worldsim.nn.patchify import PatchEmbed, patchify, unpatchify  # noqa: F401
from worldsim.nn.quantizer import QuantizerOutput, VectorQuantizer  # noqa: F401
from worldsim.nn.rope import AxialRotaryEmbedding, apply_rope  # noqa: F401
