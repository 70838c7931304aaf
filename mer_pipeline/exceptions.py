"""The package's exceptions: one root, typed subclasses with short messages."""
from __future__ import annotations


class MerError(Exception):
    """Root of every error this package raises on purpose."""


class ParameterError(MerError, ValueError):
    """A parameter or input that is out of range or of the wrong form."""


class MediaError(MerError):
    """A media file that cannot be used. ``path`` names it."""

    def __init__(self, path, message: str):
        self.path = str(path)
        super().__init__(f"{message}: {self.path}")


class MediaNotFoundError(MediaError, FileNotFoundError):
    """The media file does not exist."""


class EmptyMediaError(MediaError):
    """The media file has zero bytes."""


class CorruptMediaError(MediaError):
    """The decoder cannot read the file (truncated, corrupt or not media)."""


class NoAudioStreamError(MediaError):
    """The file has no audio stream (e.g. a video without sound)."""


class NoVideoStreamError(MediaError):
    """The file has no video stream (e.g. an audio file)."""


class SilentAudioError(MediaError):
    """The audio is digital silence, so acoustic features are meaningless."""


class TooShortError(MediaError):
    """The clip is shorter than its feature set needs (the message states the minimum)."""


class FeatureTableError(MerError, ValueError):
    """A feature table with missing, extra or malformed columns."""


class NoFaceError(MerError):
    """No face was found in any frame of a clip."""

    @classmethod
    def in_frames(cls, n_frames: int) -> "NoFaceError":
        return cls(f"no face found in any of {n_frames} frame(s)")
