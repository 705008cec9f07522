"""arXiv identifiers: parse every form people paste, normalise to one canonical id.

Pure functions only. arXiv rejects a whole `id_list` batch (HTTP 400) when one id in it
is malformed, so ids are checked here, strictly, before any request is made.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from .errors import InvalidArxivId

ACCEPTED_FORMS = (
    "1706.03762, 1706.03762v7, arXiv:1706.03762, hep-th/9901001, math.GT/0309136v2, "
    "or an arxiv.org abs/pdf/html URL of one of these"
)

# New style (April 2007 on): YYMM.NNNN until 1412, YYMM.NNNNN from 1501.
_NEW = r"(?P<yymm>\d{4})\.(?P<num>\d{4,5})"
# Old style (1991 to March 2007): archive(.SUBJECT-CLASS)/YYMMNNN.
_OLD = r"(?P<archive>[a-z]+(?:-[a-z]+)?)(?P<subj>\.[A-Za-z]{2})?/(?P<oyymm>\d{4})(?P<onum>\d{3})"
_VERSION = r"(?:v(?P<version>[1-9]\d{0,3}))?"
# ASCII only: `\d` would otherwise accept other scripts' digits, which arXiv does not.
_ID_RE = re.compile(rf"(?:{_NEW}|{_OLD}){_VERSION}", re.ASCII)
# The one list of arXiv's own hosts: paper URLs are recognised on these, and the manifest
# counts them (with any other *.arxiv.org host) as arXiv for the politeness gate.
ARXIV_HOSTS = frozenset({"arxiv.org", "www.arxiv.org", "export.arxiv.org", "browse.arxiv.org"})
_HOST_PREFIXES = tuple(sorted(ARXIV_HOSTS))  # a scheme-less "arxiv.org/abs/..." is a URL too
_PATH_PREFIXES = ("/abs/", "/pdf/", "/html/", "/format/", "/ps/")


@dataclass(frozen=True, order=True)
class ArxivId:
    """A checked arXiv id: `base` never carries a version; `version` is None for "latest"."""

    base: str
    version: int | None = None

    @property
    def key(self) -> str:
        """The manifest key: the id without version."""
        return self.base

    def with_version(self, version: int) -> ArxivId:
        return ArxivId(self.base, version)

    def __str__(self) -> str:
        return self.base if self.version is None else f"{self.base}v{self.version}"

    @property
    def is_old_style(self) -> bool:
        return "/" in self.base


def _check_dates(m: re.Match[str], text: str) -> None:
    if m.group("yymm") is not None:
        yymm, num = m.group("yymm"), m.group("num")
        month = int(yymm[2:])
        if not 1 <= month <= 12:
            raise InvalidArxivId(f"{text!r} is not an arXiv id: month {yymm[2:]} does not exist")
        if int(yymm) < 704:
            raise InvalidArxivId(
                f"{text!r} is not an arXiv id: new-style ids start in 0704 (April 2007);"
                " older papers look like hep-th/9901001"
            )
        want = 4 if int(yymm) < 1501 else 5
        if len(num) != want:
            raise InvalidArxivId(
                f"{text!r} is not an arXiv id: ids of {yymm} have {want} digits after the dot"
            )
    else:
        yymm = m.group("oyymm")
        month = int(yymm[2:])
        year = int(yymm[:2])
        # 9108 (August 1991) to 0703 (March 2007), across the century boundary
        in_range = (year > 91 or (year == 91 and month >= 8)) or (
            year < 7 or (year == 7 and month <= 3)
        )
        if not 1 <= month <= 12 or not in_range:
            raise InvalidArxivId(
                f"{text!r} is not an arXiv id: old-style ids run from 9108 to 0703"
                " (later papers look like 1706.03762)"
            )


def hostname(url: str) -> str:
    """The host a URL is sent to, as one string to compare: lowercased, without port,
    userinfo or trailing dot; "" when the URL has none or cannot be split."""
    try:
        host = urlsplit(url).hostname or ""
    except ValueError:  # e.g. an unbalanced "[" in the host
        return ""
    return host.lower().rstrip(".")


def is_arxiv_host(host: str) -> bool:
    """arXiv's own hosts and any other *.arxiv.org host (`host` as `hostname` gives it)."""
    return host in ARXIV_HOSTS or host.endswith(".arxiv.org")


def _strip_url(text: str) -> str:
    """Turn an arxiv.org URL into the id part of its path; other strings pass through."""
    if "://" not in text and not text.lower().startswith(_HOST_PREFIXES):
        return text
    candidate = text if "://" in text else "https://" + text
    try:
        parts = urlsplit(candidate)
        host = (parts.hostname or "").rstrip(".")  # as `hostname` gives it, one split less
    except ValueError:  # e.g. an unbalanced "[" in the host
        raise InvalidArxivId(f"{text!r} is not a valid URL") from None
    if host not in ARXIV_HOSTS:
        raise InvalidArxivId(f"{text!r} is not an arXiv URL (host {host or '?'} is not arxiv.org)")
    path = unquote(parts.path)
    for prefix in _PATH_PREFIXES:
        if path.startswith(prefix):
            rest = path[len(prefix) :].strip("/")
            if rest.endswith(".pdf"):
                rest = rest[: -len(".pdf")]
            return rest
    raise InvalidArxivId(
        f"{text!r} is an arxiv.org URL but not of a paper (expected /abs/ID or /pdf/ID)"
    )


def parse(text: str) -> ArxivId:
    """Parse any accepted form into an `ArxivId`; raise `InvalidArxivId` with the reason."""
    if not isinstance(text, str):
        raise InvalidArxivId(f"an arXiv id must be a string, not {type(text).__name__}")
    raw = text.strip()
    if not raw:
        raise InvalidArxivId("an arXiv id must not be empty")
    candidate = _strip_url(raw)
    if candidate[:6].lower() == "arxiv:":
        candidate = candidate[6:].strip()
    m = _ID_RE.fullmatch(candidate)
    if m is None:
        raise InvalidArxivId(f"{text!r} is not an arXiv id; accepted forms: {ACCEPTED_FORMS}")
    _check_dates(m, text)
    version = int(m.group("version")) if m.group("version") else None
    if m.group("yymm") is not None:
        base = f"{m.group('yymm')}.{m.group('num')}"
    else:
        base = f"{m.group('archive')}{m.group('subj') or ''}/{m.group('oyymm')}{m.group('onum')}"
    return ArxivId(base, version)


def is_valid(text: str) -> bool:
    try:
        parse(text)
    except InvalidArxivId:
        return False
    return True


def stem_of(base: str) -> str:
    """A file-system-safe stem for an id: old-style ids carry a slash."""
    return base.replace("/", "_")
