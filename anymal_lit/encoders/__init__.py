"""Frozen modality encoders g. A new encoder is one subclass of :class:`ModalityEncoder`."""

from anymal_lit.encoders.audio import AudioProcessor, ClapAudioEncoder, load_audio
from anymal_lit.encoders.base import MediaError, MediaProcessor, ModalityEncoder
from anymal_lit.encoders.image import ImageProcessor, OpenCLIPImageEncoder
from anymal_lit.encoders.imu import IMUEncoder, IMUEncoderConfig, IMUProcessor, load_imu
from anymal_lit.encoders.video import OpenCLIPVideoEncoder, VideoProcessor, decode_frames

__all__ = [
    "AudioProcessor",
    "ClapAudioEncoder",
    "IMUEncoder",
    "IMUEncoderConfig",
    "IMUProcessor",
    "ImageProcessor",
    "MediaError",
    "MediaProcessor",
    "ModalityEncoder",
    "OpenCLIPImageEncoder",
    "OpenCLIPVideoEncoder",
    "VideoProcessor",
    "decode_frames",
    "load_audio",
    "load_imu",
]
