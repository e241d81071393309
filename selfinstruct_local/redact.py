"""Secrets out of what sigen writes and prints: API keys and credentials in URLs.

`--api-key` reaches the engine only; the manifest's `command` and `config`, engine.log and every
message get the redacted forms made here.
"""

from __future__ import annotations

import shlex
from urllib.parse import urlsplit, urlunsplit

HIDDEN = "***"
SECRET_OPTIONS = ("--api-key",)


def redact_url(url: str) -> str:
    """The URL with any user name and password replaced by ***."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url if "@" not in url else HIDDEN
    if "@" not in parts.netloc:
        return url
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit((parts.scheme, f"{HIDDEN}@{host}", parts.path, parts.query,
                       parts.fragment))


def redact_urls(text: str | None) -> str | None:
    """A comma-separated --base-url list, each URL redacted."""
    if text is None:
        return None
    return ",".join(redact_url(u.strip()) for u in text.split(","))


def redact_argv(argv: list[str]) -> list[str]:
    """A command line with the values of secret options and URL credentials hidden."""
    out: list[str] = []
    hide_next = False
    for arg in argv:
        if hide_next:
            out.append(HIDDEN)
            hide_next = False
            continue
        name, eq, _ = arg.partition("=")
        if name in SECRET_OPTIONS:
            if eq:
                out.append(f"{name}={HIDDEN}")
            else:
                out.append(arg)
                hide_next = True
            continue
        out.append(redact_urls(arg) if "://" in arg and "@" in arg else arg)
    return out


def shell_command(argv: list[str]) -> str:
    """A command a user can paste into a shell: each argument quoted where it needs to be."""
    return shlex.join(argv)
