"""Why a call command was refused: domain errors, each naming the field at fault.

They say what went wrong in the domain's words; ``api/errors.py`` holds the one table
that renders each class as an HTTP status and a Telnyx error code. Every one carries a
``detail`` sentence for the user and, where one field is at fault, its JSON ``pointer``.

CommandError                  the application asked for something we can't do
 ├── CallNotFound             no call with that call_control_id
 ├── CallEnded                the call has ended or is hanging up
 ├── CallNotAnswered          the command needs an answered call
 ├── InvalidCommand           the call can't take this command in its present state
 ├── InvalidValue             a field's value can't be used (an address, a target)
 ├── MissingParameter         a field the command needs is absent
 ├── UnsupportedValue         a value this server does not offer
 ├── UnknownApplication       connection_id names no active application
 ├── DestinationRefused       the outbound policy refuses the address
 ├── NoSuchResource           no stream (or other sub-resource) by that id
 ├── StreamLimit              the call already carries all the streams it may
 ├── NotForked                fork_stop on a call without a fork
 ├── AlreadyTranscribing      transcription_start on a call already transcribed
 ├── TranscriptionUnavailable the transcription engine or model can't be loaded
 ├── NodeDraining             a dial on a node that is draining (callstream drain)
 └── PeerUnavailable          the process holding the other call did not answer in time
"""

from __future__ import annotations


class CommandError(Exception):
    """A refused command: ``detail`` for the user, ``pointer`` to the field at fault."""

    def __init__(self, detail: str, *, pointer: str | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.pointer = pointer


class CallNotFound(CommandError):
    """No call with that call_control_id."""


class CallEnded(CommandError):
    """The call has ended or is hanging up."""


class CallNotAnswered(CommandError):
    """The command needs an answered call."""


class InvalidCommand(CommandError):
    """The call can't take this command in its present state."""


class InvalidValue(CommandError):
    """A field's value can't be used (an address, a target)."""


class MissingParameter(CommandError):
    """A field the command needs is absent."""


class UnsupportedValue(CommandError):
    """A value this server does not offer."""


class UnknownApplication(CommandError):
    """Connection_id names no active application."""


class DestinationRefused(CommandError):
    """The outbound policy refuses the address."""


class NoSuchResource(CommandError):
    """No stream (or other sub-resource) by that id."""


class StreamLimit(CommandError):
    """The call already carries all the streams it may."""


class NotForked(CommandError):
    """Fork_stop on a call without a fork."""


class AlreadyTranscribing(CommandError):
    """Transcription_start on a call already transcribed."""


class TranscriptionUnavailable(CommandError):
    """The transcription engine or model can't be loaded."""


class NodeDraining(CommandError):
    """A dial on a node that is draining (callstream drain)."""


class PeerUnavailable(CommandError):
    """The process holding the other call of a bridge did not answer in time."""
