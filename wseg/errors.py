"""One exception type for bad user input, so every script can report it in one line."""


class WsegError(Exception):
    """A problem with user input (path, file content, flag) that the user can fix.

    The message names the offending file or flag and says what to do; scripts print it as a single line
    (``error: <message>``) and exit with status 2 instead of showing a traceback.
    """


def require(condition: bool, message: str) -> None:
    """Raise :class:`WsegError` with ``message`` unless ``condition`` holds."""
    if not condition:
        raise WsegError(message)


def one_line(exc: BaseException) -> BaseException:
    """A :class:`WsegError` re-raised by a DataLoader worker carries the worker's traceback in its message
    ("Caught WsegError in DataLoader worker process 0 ... Original Traceback ..."); keep only the original
    one-line message."""
    if isinstance(exc, WsegError):
        text = str(exc)
        marker = "WsegError: "
        if "\n" in text and marker in text:
            return WsegError(text.rsplit(marker, 1)[1].strip())
    return exc
