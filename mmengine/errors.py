"""Typed errors. Every error names the file (and line) it concerns and the reason."""
from __future__ import annotations


class MMEngineError(Exception):
    """Base class of every error raised on purpose by mmengine."""


class OptionalDependencyError(MMEngineError, ImportError):
    """An optional part was used without its extra installed; the message says what to run."""


class BackendUnavailableError(MMEngineError):
    """A requested engine backend cannot run on this machine."""


class InputLimitError(MMEngineError):
    """An input exceeds one of the limits of ``mmengine.config.InputLimits``. A marker base:
    every subclass names the file and sets ``limit`` to the field (e.g. ``"max_seconds"``),
    so ``except InputLimitError`` catches every limit of every parser."""

    limit: str = ""


class InputFileError(MMEngineError, OSError):
    """A file named by an input (lyrics, MIDI, manifest) that is not a regular file (a FIFO, a
    device such as ``/dev/zero``, a directory) or is missing; never opened for reading.
    ``path``, ``detail`` and ``missing`` (no such file) are attributes."""

    missing = False

    def __init__(self, path, detail: str):
        self.path = str(path)
        self.detail = detail
        super().__init__(f"{self.path}: {detail}")


class FileLimitError(InputFileError, InputLimitError):
    """A file larger than its ``InputLimits`` byte limit (``limit`` names the field)."""

    def __init__(self, path, size: int, max_bytes: int, limit: str, what: str = "file"):
        self.limit = limit
        super().__init__(path, f"{what} of {size} bytes exceeds {int(max_bytes)} "
                               f"(InputLimits.{limit})")


class AudioError(MMEngineError):
    """A file could not be turned into a waveform. ``path`` and ``reason`` are attributes."""

    reason = "unreadable"

    def __init__(self, path, detail: str = ""):
        self.path = str(path)
        self.detail = detail
        msg = f"{self.path}: {self.reason}"
        if detail:
            msg += f" ({detail})"
        super().__init__(msg)


class AudioMissingError(AudioError, FileNotFoundError):
    reason = "file not found"


class AudioEmptyError(AudioError):
    reason = "file is empty (0 bytes)"


class AudioTruncatedError(AudioError):
    reason = "file is truncated"


class AudioCorruptError(AudioError):
    reason = "file is corrupt or not audio"


class AudioUnsupportedFormatError(AudioError):
    reason = "unsupported audio format"


class AudioZeroLengthError(AudioError):
    reason = "audio has no samples"


class AudioNonFiniteError(AudioError):
    reason = "audio contains NaN or Inf samples"


class AudioLimitError(AudioError, InputLimitError):
    """A file outside ``InputLimits`` (bytes, sample rate, channels, decoded size), decided
    from its size or header before decoding; ``limit`` names the field."""

    reason = "outside the input limits"

    def __init__(self, path, detail: str = "", limit: str = ""):
        self.limit = limit or type(self).limit
        super().__init__(path, f"{detail}; InputLimits.{self.limit}" if self.limit else detail)


class AudioTooLongError(AudioLimitError):
    reason = "audio is longer than the configured limit"
    limit = "max_seconds"


class MidiError(MMEngineError, ValueError):
    """A MIDI file could not be read (missing, malformed, or refused). ``path`` and ``detail``
    are attributes."""

    reason = "unreadable MIDI file"

    def __init__(self, path, detail: str = ""):
        self.path = str(path)
        self.detail = detail
        super().__init__(f"{self.path}: {self.reason}" + (f" ({detail})" if detail else ""))


class MidiLimitError(MidiError, InputLimitError):
    """A MIDI file outside ``InputLimits`` (bytes, events, ticks, resolution)."""

    reason = "MIDI file outside the input limits"

    def __init__(self, path, detail: str = "", limit: str = ""):
        self.limit = limit
        super().__init__(path, f"{detail}; InputLimits.{limit}" if limit else detail)


class TextLimitError(InputLimitError, ValueError):
    """A text input (lyrics, title) longer than ``InputLimits.max_text_bytes``."""

    def __init__(self, path, detail: str = "", limit: str = "max_text_bytes"):
        self.path = str(path)
        self.limit = limit
        super().__init__(f"{self.path}: text outside the input limits ({detail}; "
                         f"InputLimits.{limit})")


class ManifestError(MMEngineError):
    """A data manifest or folder layout is invalid; ``problems`` lists every bad row."""

    def __init__(self, source, problems):
        self.source = str(source)
        self.problems = list(problems)
        lines = "\n".join(f"  {p}" for p in self.problems)
        super().__init__(f"{self.source}: {len(self.problems)} problem(s):\n{lines}")


class SplitError(ManifestError):
    """A split file is unreadable, malformed, or does not match its data set."""


class CheckpointError(MMEngineError):
    """A checkpoint or training-state file is missing, malformed or does not match its model."""


class DataError(MMEngineError, ValueError):
    """Training/evaluation data cannot be used (empty split, one class, unknown label, ...)."""


class UnknownBackendError(MMEngineError, ValueError):
    """A backend name that is not in the registry; the message lists the valid names."""


class UnsupportedSettingsError(MMEngineError, ValueError):
    """A component cannot compute the settings it was given (e.g. the DALI front end and a
    front-end config with the chroma pitch stream); the message says what to use instead."""


class EngineFileError(MMEngineError):
    """An engine file (``.mme``) was refused: foreign, newer, truncated, tampered or malformed.
    ``path`` and ``reason`` are attributes."""

    def __init__(self, path, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: not a usable mmengine engine file: {reason}")


class BatchError(MMEngineError):
    """A batch run (``mmengine batch``) cannot start or go on: unwritable or unknown results
    file, results written by another engine, another run writing the same file, or a Ray
    cluster that cannot hold the actors asked for. The message says what to do."""
