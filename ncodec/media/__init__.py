"""Reading and writing media files: images (Pillow), audio (soundfile; long files via media.audio sources)."""
from .io import IMAGE_EXT, AUDIO_EXT, detect_media, read_image, write_audio, write_image

__all__ = ["IMAGE_EXT", "AUDIO_EXT", "detect_media", "read_image", "write_audio", "write_image"]
