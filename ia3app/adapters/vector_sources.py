"""Where T-Few's released vectors may come from (torch-free, so the web process can check a form).

Only T-Few's release URL(s) are downloaded; in the app a local file must lie inside the data
directory. Anything else (file://, another host, an internal address, /etc/passwd) is refused before
it is opened or fetched.
"""

from __future__ import annotations

import re
from pathlib import Path

from ia3app.errors import UserError

TFEW_URL = "https://github.com/r-three/t-few/raw/master/pretrained_checkpoints/t03b_ia3_finish.pt"
ALLOWED_URLS = frozenset({
    TFEW_URL,
    "https://raw.githubusercontent.com/r-three/t-few/master/pretrained_checkpoints/t03b_ia3_finish.pt",
})
"""The only URLs vectors are downloaded from."""


def is_url(text: str) -> bool:
    return bool(re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", text))


def check_source(path_or_url: str | Path, allowed_dirs: list[Path] | None = None,
                 allowed_urls: frozenset[str] | set[str] = ALLOWED_URLS) -> None:
    """UserError unless the source is an allowed URL or (with allowed_dirs) a file inside one of them.
    allowed_dirs=None (the command line, run by the machine's own user) allows any local path."""
    text = str(path_or_url).strip()
    if is_url(text):
        if text not in allowed_urls:
            raise UserError(f"T-Few vectors are downloaded only from T-Few's release ({TFEW_URL}); "
                            f"{text.split('://')[0]}:// addresses elsewhere are refused")
        return
    if allowed_dirs is not None:
        real = Path(text).expanduser().resolve()
        if not any(real.is_relative_to(Path(d).resolve()) for d in allowed_dirs):
            raise UserError(f"T-Few vectors must be a file inside the data directory "
                            f"({', '.join(str(d) for d in allowed_dirs)}) or T-Few's release URL ({TFEW_URL})")
