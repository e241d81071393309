"""Secrets out of what sigen writes and prints: API keys and credentials in URLs.

`--api-key` reaches the engine only; the manifest's `command` and `config`, engine.log and every
message get the redacted forms made here.
"""

from __future__ import annotations

import re
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


def public_url(url: str) -> str:
    """The URL without credentials, for logs and the manifest (never raises: a URL that does
    not parse loses whatever stands before an @ in it)."""
    try:
        parts = urlsplit(url)
        host, port = parts.hostname or "", parts.port
    except ValueError:
        return without_credentials(url)
    host = f"[{host}]" if ":" in host else host  # an IPv6 address
    netloc = f"{host}:{port}" if port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def without_credentials(text: str) -> str:
    """A URL that may not parse, without whatever stands between // and its last @."""
    return re.sub(r"//.*@", "//", text, count=1)


def mask_secrets(text: str, secrets: list[str]) -> str:
    """Server text (an error message, a reply quoted) with the secrets sent to it masked: a
    hostile server may echo the API key back."""
    for secret in sorted(secrets, key=len, reverse=True):
        text = text.replace(secret, "***")
    return text
