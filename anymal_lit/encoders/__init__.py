"""Frozen modality encoders g. A new encoder is one subclass of :class:`ModalityEncoder`."""

from anymal_lit.encoders.base import MediaError, MediaProcessor, ModalityEncoder
from anymal_lit.encoders.image import ImageProcessor, OpenCLIPImageEncoder

__all__ = ["ImageProcessor", "MediaError", "MediaProcessor", "ModalityEncoder", "OpenCLIPImageEncoder"]
