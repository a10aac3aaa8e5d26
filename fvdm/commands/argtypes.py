"""argparse types that refuse out-of-range numbers at the command line (one line, naming the flag and the fix).

``type=int`` alone lets ``--steps 0`` or ``--max-steps -3`` through, where they silently fall back
to defaults or do nothing; these make argparse answer ``argument --steps: must be an integer >= 1,
got 0`` instead.
"""

from __future__ import annotations

import argparse
from typing import Callable


def int_at_least(lo: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an integer >= {lo}, got {text!r}") from None
        if value < lo:
            raise argparse.ArgumentTypeError(f"must be an integer >= {lo}, got {value}")
        return value

    parse.__name__ = f"int>={lo}"  # what argparse names in its own messages
    return parse


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number > 0, got {text!r}") from None
    if not value > 0:  # also refuses nan
        raise argparse.ArgumentTypeError(f"must be a number > 0, got {text}")
    return value


positive_int = int_at_least(1)
nonnegative_int = int_at_least(0)
