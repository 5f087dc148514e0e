"""The one exception type that reaches the user as a one-line message instead of a traceback."""


class UserError(Exception):
    """Bad input or options: the message names the file or option and says what to do."""


def error_prefix() -> str:
    """'error' for a single process; 'error (rank R of N)' under torchrun, so one line says which rank failed."""
    import os

    rank, world_size = os.environ.get("RANK", "0"), os.environ.get("WORLD_SIZE", "1")
    return f"error (rank {rank} of {world_size})" if world_size not in ("", "0", "1") else "error"
