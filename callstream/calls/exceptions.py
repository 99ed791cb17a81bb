"""Errors a call command can end in, each carrying its Telnyx error code.

CommandError                 the application asked for something we can't do (HTTP 4xx)
 ├── CallNotFound            90015: no call with that call_control_id
 ├── CallEnded               90018: the call has already ended
 ├── CallNotAnswered         90034: the command needs an answered call
 └── InvalidCommand          any other refusal, with the code and field it names
"""

from __future__ import annotations


class CommandError(Exception):
    status = 422
    code = "10015"
    title = "Bad Request"

    def __init__(self, detail: str, *, pointer: str | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.pointer = pointer


class CallNotFound(CommandError):
    code = "90015"
    title = "Invalid Call Control ID"


class CallEnded(CommandError):
    code = "90018"
    title = "Call has already ended"


class CallNotAnswered(CommandError):
    code = "90034"
    title = "Call not answered yet"


class InvalidCommand(CommandError):
    def __init__(
        self, code: str, title: str, detail: str, *, pointer: str | None = None, status: int = 422
    ) -> None:
        super().__init__(detail, pointer=pointer)
        self.code = code
        self.title = title
        self.status = status
