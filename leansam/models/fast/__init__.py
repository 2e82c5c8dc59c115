"""The fast, inference-only strategy for the mask decoder (``Sam.decoder_impl = "fast"``).

:class:`FastDecoder` computes what the reference :class:`~leansam.models.mask_decoder.MaskDecoder`
computes, reassociated for many prompts on one image; see :mod:`.decoder` and docs/performance.md.
"""

from .decoder import DecodedTokens, FastDecoder, FastOptions

__all__ = ["DecodedTokens", "FastDecoder", "FastOptions"]
