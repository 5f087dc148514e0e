"""The one exception type that reaches the user as a one-line message instead of a traceback."""


class UserError(Exception):
    """Bad input or options: the message names the file or option and says what to do."""


def error_prefix() -> str:
    """'error' for a single process; 'error (rank R of N)' under torchrun, so one line says which rank failed."""
    import os

    rank, world_size = os.environ.get("RANK", "0"), os.environ.get("WORLD_SIZE", "1")
    return f"error (rank {rank} of {world_size})" if world_size not in ("", "0", "1") else "error"


def brief(exc: BaseException, limit: int = 160) -> str:
    """An exception's first line, cut to ``limit`` characters at a word and with its brackets closed, to quote
    inside a one-line message (a cut state-dict error left an unclosed parenthesis)."""
    text = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    if len(text) > limit:
        text = text[:limit].rsplit(" ", 1)[0].rstrip(",;:") + " ..."
    pairs, still_open = {"(": ")", "[": "]", "{": "}"}, []
    for char in text:
        if char in pairs:
            still_open.append(pairs[char])
        elif still_open and char == still_open[-1]:
            still_open.pop()
    return text + "".join(reversed(still_open))
