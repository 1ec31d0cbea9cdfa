"""What every layer shares and nothing else: the error type worded for a person (common.errors)."""
