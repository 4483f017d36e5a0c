"""Secrets for the line outputs, kept off the command line (argv is world-readable: `ps`).

Production form, per secret: a file (`--mqtt-password-file`, `--webhook-file`, `--http-token-file`,
camera URLs in a sources list) or an environment variable (`DUALKD_MQTT_PASSWORD`, `DUALKD_WEBHOOK`).
A password typed on the command line still works, with one warning saying how to move it.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path
from urllib.parse import urlsplit

from dualkd_edge.errors import UserError

log = logging.getLogger("dualkd_edge")

MQTT_PASSWORD_ENV = "DUALKD_MQTT_PASSWORD"
WEBHOOK_ENV = "DUALKD_WEBHOOK"
_warned: set[str] = set()


def read_secret_file(path: Path, option: str) -> str:
    """The first non-empty line of `path`, stripped; a warning when others may read the file."""
    path = Path(path)
    try:
        text = path.read_text()
        mode = path.stat().st_mode
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{option}: cannot read {path} ({getattr(exc, 'strerror', None) or exc})") from None
    value = next((line.strip() for line in text.splitlines() if line.strip()), "")
    if not value:
        raise UserError(f"{option}: {path} is empty")
    if mode & (stat.S_IRGRP | stat.S_IROTH) and option not in _warned:
        _warned.add(option)
        log.warning("%s: %s can be read by other users; chmod 600 it", option, path)
    return value


def url_has_password(url: str | None) -> bool:
    if not url or "://" not in url:
        return False
    try:
        return urlsplit(url).password is not None
    except ValueError:
        return False


def warn_secret_on_command_line(option: str, fix: str) -> None:
    """Once per option: a secret given in argv is visible to every user of the machine."""
    if option in _warned:
        return
    _warned.add(option)
    log.warning("%s: a password on the command line can be read by every user of this machine (ps, "
                "/proc/PID/cmdline); for production %s", option, fix)


def webhook_display(url: str) -> str:
    """What may be shown of a webhook URL: scheme, host and port. Its path and query are treated as
    secret (Slack-style URLs carry the key in the path, signed URLs in `?sig=`)."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or "?"
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "(webhook URL)"
    host = f"[{host}]" if ":" in host else host
    hidden = "/***" if (parts.path not in ("", "/") or parts.query) else "/"
    auth = "***@" if "@" in parts.netloc else ""
    return f"{parts.scheme}://{auth}{host}{port}{hidden}"


def resolve_webhook(url: str | None, url_file: Path | None) -> str | None:
    """--webhook URL, or --webhook-file F, or $DUALKD_WEBHOOK (in that order; two of them: an error)."""
    given = [(name, v) for name, v in (("--webhook", url), ("--webhook-file", url_file)) if v is not None]
    if len(given) > 1:
        raise UserError("--webhook and --webhook-file: give one of them")
    if url_file is not None:
        return read_secret_file(url_file, "--webhook-file")
    if url is not None:
        parts = _safe_split(url)
        if parts is not None and (parts.password is not None or parts.query):
            warn_secret_on_command_line("--webhook", f"put the URL in a file (--webhook-file F) or ${WEBHOOK_ENV}")
        return url
    return os.environ.get(WEBHOOK_ENV) or None


def resolve_mqtt_password(url: str | None, password_file: Path | None) -> str | None:
    """The MQTT password from --mqtt-password-file or $DUALKD_MQTT_PASSWORD (None: the URL's, if any)."""
    if password_file is not None:
        if url is None:
            raise UserError("--mqtt-password-file: needs --mqtt URL (with the user name: mqtt://USER@HOST/TOPIC)")
        return read_secret_file(password_file, "--mqtt-password-file")
    if url_has_password(url):
        warn_secret_on_command_line("--mqtt", f"use --mqtt-password-file F or ${MQTT_PASSWORD_ENV}")
        return None
    return os.environ.get(MQTT_PASSWORD_ENV) if url is not None else None


def warn_source_credentials(source: str) -> None:
    if url_has_password(source):
        warn_secret_on_command_line("SOURCE", "put camera URLs with credentials in a sources list file "
                                    "(SOURCE = cams.txt, one URL per line, chmod 600)")


def _safe_split(url: str):
    try:
        return urlsplit(url)
    except ValueError:
        return None
