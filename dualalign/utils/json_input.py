"""Reading a user's JSON file in a command-line script: one-line errors that name the file."""

import json

__all__ = ["InputError", "load_json"]


class InputError(Exception):
    """A user-facing input problem: the scripts report it in one line and exit with code 2."""


def load_json(path: str, what: str):
    """The parsed JSON file ``path``; ``what`` names its flag (``--what``) in the errors."""
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        raise InputError(f"{what} file {path} not found; check the --{what} path") from None
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"cannot read {what} file {path}: {e}") from None
    except json.JSONDecodeError as e:
        msg = f"{what} file {path} is not valid JSON ({e}); fix or regenerate it"
        raise InputError(msg) from None
