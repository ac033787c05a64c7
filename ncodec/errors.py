"""The library's exceptions: one base class, leaves that also inherit a built-in (stdlib only).

Each message quotes the bad value and says what to do. The CLI maps classes to exit codes.
"""


class NcodecError(Exception):
    """Base class of every error ncodec raises on purpose."""


class CorruptFile(NcodecError, ValueError):
    """The bytes are not a valid .nc file (bad signature, CRC mismatch, truncation, inconsistent fields)."""


class UnsupportedVersion(NcodecError, ValueError):
    """The file was written by a newer major format or codec version than this library reads."""


class LimitExceeded(NcodecError, ValueError):
    """A size in the file or input is above a safety limit; raised before anything is allocated."""


class UnknownCodec(NcodecError, KeyError):
    """No codec is registered under the requested id."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class ModelMismatch(NcodecError, LookupError):
    """The model a file needs is not installed, or its weights differ from the file's hash."""


class BadInput(NcodecError, ValueError):
    """The input media cannot be read or is outside what the codec supports."""


class ModelExists(NcodecError, FileExistsError):
    """A model of that id is already in the target folder; exports never replace one unless told to."""


class ConversionWarning(UserWarning):
    """The input was converted to what the codec codes and something was lost (alpha, 16-bit precision)."""
