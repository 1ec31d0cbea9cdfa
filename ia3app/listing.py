"""How a message lists row or column numbers: the first few, then how many more (torch-free)."""

MAX_LISTED = 8
"""Most row/column numbers (or values) one message lists before "and N more"."""


def listed_numbers(numbers: list[int], most: int = MAX_LISTED) -> str:
    """'3, 7, 9' or '1, 2, 3, 4, 5, 6, 7, 8 and 4 more'."""
    more = len(numbers) - most
    return ", ".join(str(n) for n in numbers[:most]) + (f" and {more} more" if more > 0 else "")
