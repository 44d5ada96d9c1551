"""Escaping of outbound text, one function per destination format.

Payload text (alert titles, incident names, GitHub refs, messages) is data: wherever it
lands it must read as text and never as markup of that destination. Each format is escaped
here and nowhere else:

- `slack_mrkdwn`: Slack's three control characters `& < >` become entities, so no
  `<!channel>`, `<@U…>` or `<url|label>` can come from a payload. `slack_link` is the only
  way a link is built, and only for http(s) URLs.
- `jira_wiki`: every character Jira's wiki renderer gives a meaning (`[ ] { } ! | * _ …`)
  is backslash-escaped, so no mention, link, image or macro can come from a payload; a
  payload backslash becomes U+29F5 (reverse solidus operator), since a double backslash is
  a line break and would undo the next escape. http(s) URLs made only of harmless
  characters are kept so Jira links them.
- `statuspage_text`: the public page gets plain text: tags and `<!…>` constructs are
  dropped, any other `<`/`>` becomes U+2039/U+203A (single angle quotation marks).
- `terminal`: control characters (ESC sequences, C0 and C1 codes, bidi overrides) are
  removed; newline and tab stay.

Which parameters of which action are in which format is declared by each connector
(`Connector.markup`); the templating escapes values interpolated into those parameters
while the operator's own literal text in hub.yaml is kept as written.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from urllib.parse import quote, urlsplit

# -- Slack --------------------------------------------------------------------------------------

_SLACK = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;"})


def slack_mrkdwn(text: str) -> str:
    """Text that Slack shows as written: `&`, `<`, `>` as entities."""
    return str(text).translate(_SLACK)


def safe_http_url(url: str) -> str | None:
    """`url` when it is an absolute http(s) URL with a host, else None."""
    try:
        parts = urlsplit(str(url).strip())
    except ValueError:
        return None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        return None
    return str(url).strip()


def slack_link(href: str, text: str | None = None) -> str:
    """`<href|text>` for an http(s) URL; anything else (javascript:, data:, …) as plain text."""
    url = safe_http_url(href)
    label = slack_mrkdwn(str(text or href))
    if url is None:
        return label
    # `|` and `>` end the URL part of a Slack link; percent-encode them (and spaces), escape `&`.
    url = quote(url, safe="/:?#[]@!$&'()*+,;=%~-._")
    return f"<{slack_mrkdwn(url)}|{label}>"


# -- Jira wiki markup ---------------------------------------------------------------------------

#: The characters Jira's BackslashEscapeRendererComponent unescapes (all with a meaning).
JIRA_SPECIAL = "-#*_+?^~|%{}[]()!@"
BACKSLASH_STANDIN = "\u29f5"
_JIRA_URL = re.compile(r"https?://[A-Za-z0-9._~:/?#@$&'()*+,;=%-]+")
_JIRA_TOKEN = re.compile(_JIRA_URL.pattern + r"|[" + re.escape(JIRA_SPECIAL + "\\") + r"]")


def _jira_token(m: re.Match[str]) -> str:
    s = m.group(0)
    if len(s) > 1:
        return s  # a plain URL: Jira links it, and it holds none of [ ] { } ! | \ < >
    return BACKSLASH_STANDIN if s == "\\" else "\\" + s


def jira_wiki(text: str) -> str:
    """Text that Jira's wiki renderer shows as written (no mentions, links, images, macros)."""
    return _JIRA_TOKEN.sub(_jira_token, str(text))


# -- Statuspage ---------------------------------------------------------------------------------

_TAG = re.compile(r"<[^<>]*>")


def statuspage_text(text: str) -> str:
    """Plain text for the public status page: no HTML, no `<!channel>`-style constructs."""
    out = _TAG.sub("", terminal(str(text)))
    return out.replace("<", "\u2039").replace(">", "\u203a")


# -- terminals ----------------------------------------------------------------------------------

_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def terminal(text: str) -> str:
    """Text safe to print on a terminal: control characters removed (newline and tab kept)."""
    return _CONTROL.sub("", str(text))


#: Format names as connectors declare them (`Connector.markup`) → the escape function.
FORMATS: dict[str, Callable[[str], str]] = {"slack_mrkdwn": slack_mrkdwn, "jira_wiki": jira_wiki,
                                            "statuspage_text": statuspage_text, "terminal": terminal}
