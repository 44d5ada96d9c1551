"""What a connector module provides: an inbound source, outbound actions, or both.

An inbound source turns a webhook into normalised events in four steps, each of which may
reject the request with a 4xx before anything is stored:
``verify`` (raw bytes, constant time) → ``decode`` (bytes → JSON) → ``validate`` (pydantic
model of the payload) → ``delivery_id`` (for redelivery detection). ``normalise`` runs in
the worker, from the stored raw body.

An outbound connector exposes named async actions. Each returns an :class:`Outcome`; the
shared runner in ``hub.worker.actions`` does retries, backoff, rate limits, dead letters and
recording, so a connector only says what happened.

Both declare what the hub needs to know about them as class attributes (variables, actions,
rate limit, catalog keys, record fields: `connectors._declarations`, re-exported here); the
registry reads them, so nothing in `hub/` names an outside system.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import BaseModel, ValidationError
from pydantic_core import from_json

from connectors._declarations import CatalogField, CatalogView, PageFacts, Record, Setting
from hub.core.events import NormalisedEvent
from hub.core.interactions import Interaction

if TYPE_CHECKING:
    import aiohttp
    from redis.asyncio import Redis

    from hub.core.settings import Settings


class BadPayload(Exception):
    """The body is not what this source sends (→ 400). `code` is the machine-readable reason."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail


def summarise_validation(e: ValidationError, limit: int = 3) -> str:
    """A short human sentence from a pydantic error, e.g. `alerts.0.status: Field required`."""
    parts = []
    for err in e.errors()[:limit]:
        loc = ".".join(str(p) for p in err["loc"]) or "body"
        parts.append(f"{loc}: {err['msg']}")
    more = len(e.errors()) - limit
    return "; ".join(parts) + (f" (+{more} more)" if more > 0 else "")


JSON_TYPES = ("application/json",)


def is_json_content_type(ct: str) -> bool:
    return ct in JSON_TYPES or (ct.startswith("application/") and ct.endswith("+json"))


#: Deeper JSON is refused: real webhooks nest fewer than 15 levels, and Python's json (and
#: everything that walks the value later) fails with RecursionError near 1,000.
MAX_JSON_DEPTH = 100


def loads_json(data: bytes | str) -> Any:
    """json.loads for webhook bodies; ValueError for what the hub cannot safely hold.

    - Nesting deeper than MAX_JSON_DEPTH is refused (it would be a 500 or a poison event).
    - Lone UTF-16 surrogates (`"\\ud83d"` escapes) become U+FFFD: JSON allows them and
      senders written in JavaScript produce them by cutting an emoji in half, but Python
      keeps them in str, where they cannot be encoded as UTF-8 and would fail every later
      write of the event (keys, records, the outbound call).

    Parsed by pydantic-core's parser first (about twice as fast as json.loads, and it gives
    the same value for every document it accepts: big integers stay int, NaN and Infinity
    are floats); anything it refuses (lone surrogates, a BOM, UTF-16, nesting past its own
    limit, invalid JSON) goes through json.loads as before, which decides the outcome.
    (orjson is faster still but turns integers past 64 bits into floats.)
    """
    try:
        value = from_json(data, cache_strings=False)
    except (ValueError, TypeError):
        return _loads_json_stdlib(data)
    raw = data if isinstance(data, bytes) else data.encode("utf-8", "surrogatepass")
    if raw.count(b"{") + raw.count(b"[") > MAX_JSON_DEPTH and _deeper_than(value, MAX_JSON_DEPTH):
        raise ValueError(f"nested deeper than {MAX_JSON_DEPTH} levels")
    return value  # the fast parser refuses lone surrogates: nothing to replace


def _loads_json_stdlib(data: bytes | str) -> Any:
    """`loads_json` on json.loads alone: the reference the fast path must agree with."""
    try:
        value = json.loads(data)
    except RecursionError:
        raise ValueError(f"nested deeper than {MAX_JSON_DEPTH} levels") from None
    raw = data if isinstance(data, bytes) else data.encode("utf-8", "surrogatepass")
    if raw.count(b"{") + raw.count(b"[") > MAX_JSON_DEPTH and _deeper_than(value, MAX_JSON_DEPTH):
        raise ValueError(f"nested deeper than {MAX_JSON_DEPTH} levels")
    if b"\\ud" in raw or b"\\uD" in raw:
        return _no_surrogates(value)
    return value


def _deeper_than(value: Any, limit: int) -> bool:
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            item = list(item.values())
        elif not isinstance(item, list):
            continue
        if depth > limit:
            return True
        stack.extend((v, depth + 1) for v in item if isinstance(v, dict | list))
    return False


def _no_surrogates(value: Any) -> Any:
    if isinstance(value, str):
        return value.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    if isinstance(value, dict):
        return {_no_surrogates(k): _no_surrogates(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_no_surrogates(v) for v in value]
    return value


class InboundSource:
    """Base class for a webhook sender. Subclasses set the class vars and override hooks."""

    name: ClassVar[str]
    #: The environment variables this source reads (its secrets, e.g. a webhook secret).
    variables: ClassVar[tuple[Setting, ...]] = ()
    #: Headers worth keeping with the event (never auth or signature headers).
    recorded_headers: ClassVar[tuple[str, ...]] = ("User-Agent",)
    #: The settings attributes holding this source's credentials, e.g. ("github_webhook_secret",).
    credential_settings: ClassVar[tuple[str, ...]] = ()
    model: ClassVar[type[BaseModel]]

    def missing_credentials(self, settings: Settings) -> str | None:
        """Name of the variable to set when no credential is configured, else None."""
        if any(getattr(settings, attr) for attr in self.credential_settings):
            return None
        return " or ".join(a.upper() for a in self.credential_settings)

    #: How the 415 answer names what this source accepts.
    accepted_content_types: ClassVar[str] = "application/json (or application/*+json)"

    def accepts_content_type(self, content_type: str) -> bool:
        return is_json_content_type(content_type)

    def verify(self, body: bytes, headers: Mapping[str, str], settings: Settings) -> str:
        """Raise AuthError unless the request is authentic; return how it was verified."""
        raise NotImplementedError

    def decode(self, body: bytes, content_type: str) -> Any:
        try:
            return loads_json(body)
        except (ValueError, UnicodeDecodeError) as e:
            raise BadPayload("malformed_json", f"body is not valid JSON: {e}") from None

    def validate(self, data: Any, headers: Mapping[str, str]) -> BaseModel:
        try:
            return self.model.model_validate(data)
        except ValidationError as e:
            raise BadPayload("invalid_payload", f"not a {self.name} webhook: {summarise_validation(e)}") from None

    def delivery_id(self, payload: BaseModel, headers: Mapping[str, str], body: bytes) -> str:
        """The sender's id for this delivery, identical across its retries."""
        raise NotImplementedError

    def normalise(
        self, payload: BaseModel, headers: Mapping[str, str], options: Mapping[str, Any] | None = None
    ) -> list[NormalisedEvent]:
        """Turn a validated payload into events. `options` is this source's catalog section."""
        raise NotImplementedError

    def no_events_reason(self, payload: BaseModel, headers: Mapping[str, str],
                         options: Mapping[str, Any] | None = None) -> str:
        """Why `normalise` returned no events for this payload (recorded on the event)."""
        return f"the {self.name} payload carries nothing the hub acts on"

    def parse(self, body: bytes, headers: Mapping[str, str], content_type: str) -> BaseModel:
        """decode + validate: the full payload, as the worker reads it."""
        return self.validate(self.decode(body, content_type), headers)

    def parse_ingress(self, body: bytes, headers: Mapping[str, str], content_type: str) -> BaseModel:
        """What the ingress checks before acking: by default the full `parse`.

        A source with large bodies may check only the fields the hub cannot work without
        (what `delivery_id` and the worker's `normalise` require), straight from the bytes.
        """
        return self.parse(body, headers, content_type)

    def check_options(self, options: Any) -> list[str]:
        """Problems in this source's catalog options, one sentence each (for `incident-hub validate`).

        Sources read options leniently (a bad value falls back to the default), so this is
        where a typo gets reported.
        """
        return []

    #: Headers the bundled sample (`incident-hub send SOURCE`) needs besides auth.
    sample_headers: ClassVar[dict[str, str]] = {}

    def guess_headers(self, body: bytes, *, sending: bool = False) -> dict[str, str]:
        """Headers the real sender would set that can be told from the body (e.g. an event type
        header), for `send` and `simulate` when the operator gives none. `sending`: a value is
        needed even when the body tells nothing."""
        return {}

    def freshen(self, data: Any) -> bool:
        """Make the parsed body a *new* delivery in place: change only what its delivery id
        (the hub's dedup key) is made of. False when there is nothing to change."""
        return False

    def sign_request(self, body: bytes, settings: Settings, now: float | None = None, *,
                     same_id: bool = False) -> dict[str, str]:
        """Headers that make `body` authentic under `settings` (for `incident-hub send` and tests).

        Uses the first configured secret/token; raises LookupError when none is configured.
        `same_id`: a delivery id carried in headers is derived from the body, so sending the
        same body twice is one delivery.
        """
        raise NotImplementedError(f"{self.name} cannot sign requests")


class InteractionSource:
    """An outside tool's interactions endpoint: people acting on an incident from its messages
    (buttons). The ingress mounts it at `path` (`hub.ingress.interactions`): `verify` on the raw
    bytes (AuthError: 401, nothing runs), then `parse` (BadPayload: 400) into an `Interaction`."""

    name: ClassVar[str]
    #: Where the ingress answers it, e.g. "/slack/interactions".
    path: ClassVar[str]
    #: The settings attributes holding its signing secret; none set: the endpoint answers 503.
    credential_settings: ClassVar[tuple[str, ...]] = ()

    def missing_credentials(self, settings: Settings) -> str | None:
        if any(getattr(settings, attr) for attr in self.credential_settings):
            return None
        return " or ".join(a.upper() for a in self.credential_settings)

    def verify(self, body: bytes, headers: Mapping[str, str], settings: Settings) -> None:
        """Raise AuthError unless the request is authentic (raw bytes, constant time)."""
        raise NotImplementedError

    def parse(self, body: bytes, headers: Mapping[str, str], content_type: str) -> Interaction:
        """The click; BadPayload for anything that is not one of the hub's buttons."""
        raise NotImplementedError


# ---------------------------------------------------------------------------------------------
# Outbound


OutcomeState = Literal["succeeded", "retryable", "permanent", "skipped"]

RESPONSE_KEEP = 2000


@dataclass
class Outcome:
    """What one attempt of an action did. Connectors return it; the runner records it."""

    state: OutcomeState
    status: int | None = None
    detail: str = ""
    result: dict[str, Any] = field(default_factory=dict)
    retry_after: float | None = None
    response: str = ""
    #: True when the attempt may have reached the outside system (timeout after sending):
    #: creations must look up before creating again.
    ambiguous: bool = False

    @property
    def ok(self) -> bool:
        return self.state == "succeeded"


@dataclass
class ActionCall:
    """One attempt of one action instance, as a connector sees it."""

    event_id: str
    action_id: str
    idempotency_key: str
    params: dict[str, Any]
    attempt: int = 1
    #: Some earlier attempt may have reached the outside system (it timed out or the
    #: connection broke after sending): creations must look before they create again.
    after_ambiguous: bool = False


@dataclass
class RetryPolicy:
    max_attempts: int = 6
    base_delay: float = 1.0
    max_delay: float = 300.0
    #: An action older than this is not worth performing any more (seconds).
    deadline: float = 24 * 3600
    #: A server's Retry-After longer than this is capped (a misbehaving header must not
    #: park an action for days); the deadline still applies.
    max_retry_after: float = 3600.0


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds from a Retry-After header: delta-seconds or an HTTP date (RFC 9110 §10.2.3)."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:  # an HTTP date is always GMT
            when = when.replace(tzinfo=UTC)
        seconds = when.timestamp() - (time.time() if now is None else now)
    if seconds != seconds or seconds in (float("inf"), float("-inf")):  # NaN or infinite
        return None
    return max(0.0, seconds)


def classify_status(status: int, body: str, headers: Mapping[str, str], extra_retryable: tuple[int, ...] = ()
                    ) -> Outcome:
    """The one shared rule: 2xx ok; 5xx, 429 (and connector extras) retry; other 4xx permanent."""
    trimmed = body[:RESPONSE_KEEP]
    if 200 <= status < 300:
        return Outcome("succeeded", status, response=trimmed)
    if status >= 500 or status == 429 or status in extra_retryable:
        return Outcome("retryable", status, detail=f"HTTP {status}", response=trimmed,
                       retry_after=parse_retry_after(headers.get("Retry-After")))
    return Outcome("permanent", status, detail=f"HTTP {status}: {trimmed[:200]}", response=trimmed)


def stable_ref(key: str, length: int = 16) -> str:
    """A short, stable, URL- and label-safe reference for an arbitrary key (hex of SHA-256)."""
    return hashlib.sha256(key.encode()).hexdigest()[:length]


def fit_key(key: str, limit: int) -> str:
    """`key` itself when it fits the outside system's limit, else a stable digest of it."""
    return key if len(key) <= limit else "ih-" + stable_ref(key, 60)


ActionFn = Callable[[ActionCall], Awaitable[Outcome]]


class Connector:
    """Base class for an outbound system. One instance per worker process."""

    name: ClassVar[str]
    #: The environment variables this connector reads (credentials, API URLs with defaults).
    variables: ClassVar[tuple[Setting, ...]] = ()
    #: The action names `actions()` provides (`<name>.<action>` in workflows).
    action_names: ClassVar[frozenset[str]] = frozenset()
    #: Actions that open or announce something: a retry of one still pending when its incident
    #: resolves is dropped (the resolution supersedes it).
    superseded_by_resolution: ClassVar[frozenset[str]] = frozenset()
    #: Incident fields a step may `record:` from this connector's results.
    recorded: ClassVar[dict[str, Record]] = {}
    #: (parameter, variable): the parameter naming a call's target (a routing key, a webhook
    #: URL) and the variable the connector uses when a step leaves it empty, so a dry run can
    #: say when a catalog's own target fell back to the global one.
    global_target: ClassVar[tuple[str, str] | None] = None
    #: Default client-side rate limit, e.g. "120/min"; overridden by <NAME>_RATE_LIMIT.
    default_rate_limit: ClassVar[str | None] = None
    retry_policy: ClassVar[RetryPolicy] = RetryPolicy()
    #: Status codes this system uses for "slow down" besides 429 (Statuspage: 420).
    extra_retryable: ClassVar[tuple[int, ...]] = ()
    #: Seconds one HTTP request may take before it counts as an (ambiguous) timeout.
    timeout: ClassVar[float] = 10.0
    #: Seconds one whole attempt may take (an action may make several requests).
    attempt_timeout: ClassVar[float] = 30.0
    #: Seconds a request whose answer was lost (timeout, reset) may still take to complete
    #: on the server: a create found missing sooner than this is looked for again, not redone.
    in_flight_grace: ClassVar[float] = 10.0
    #: Actions whose repeat the outside system deduplicates (PagerDuty's dedup_key, an
    #: OpsGenie alias, incident.io's idempotency_key): their success may be recorded with
    #: the event's next write instead of on its own. Anything else (a Slack message, a
    #: note) is recorded before the hub does anything more.
    repeat_safe: ClassVar[frozenset[str]] = frozenset()
    #: {action: {param: format}}: parameters that the outside system renders as markup. The
    #: templating escapes values interpolated into them for that format (a hub.escape
    #: FORMATS name), so payload text cannot become markup while the operator's literal
    #: text in hub.yaml stays as written.
    markup: ClassVar[dict[str, dict[str, str]]] = {}
    #: {format name: escape function}: the markup formats this system renders, named in `markup`.
    formats: ClassVar[dict[str, Callable[[str], str]]] = {}

    def __init__(self, settings: Settings, http: aiohttp.ClientSession, redis: Redis) -> None:
        self.settings = settings
        self.http = http
        self.redis = redis

    def missing_config(self, params: Mapping[str, Any] | None = None) -> str | None:
        """Why this connector is disabled for a call with these params (e.g. "slack not
        configured (SLACK_WEBHOOK_URL)"), or None when it can run."""
        return None

    def modes(self) -> set[str]:
        """More names this connector counts as configured under (`configured:` conditions), for
        a mode its settings switch on, e.g. `slack.api` once a bot token is set."""
        return set()

    # -- the rules file --------------------------------------------------------------------------

    #: Keys this connector adds to catalog entries and conditions.
    catalog_fields: ClassVar[tuple[CatalogField, ...]] = ()

    @classmethod
    def catalog_view(cls, place: str, entry: Any, view: CatalogView) -> dict[str, Any]:
        """What templates see of this connector's keys on one catalog entry (`service.<key>`, …).

        The default shows each key of `place` as written, `env:` references resolved.
        """
        return {f.name: view.value(f, getattr(entry, f.name, None)) for f in cls.catalog_fields if place in f.on}

    # -- roles the hub's fallback pager looks for (`hub.worker.fallback`) ----------------------

    #: How people write the system's name (in messages); default `name`.
    label: ClassVar[str] = ""
    #: The action that pages a person, when this system is a pager; a dead one pages through
    #: another pager, and the `notice_action` of a notifier tells the team.
    page_action: ClassVar[str | None] = None
    #: Among pagers, the one preferred when several could page (lowest first).
    page_priority: ClassVar[int] = 100
    #: The action that posts a message to a team, when this system is a notifier.
    notice_action: ClassVar[str | None] = None

    @classmethod
    def display_name(cls) -> str:
        return cls.label or cls.name

    @classmethod
    def page_facts(cls, params: Mapping[str, Any]) -> PageFacts:
        """What a page of this pager says, from its `page_action` params."""
        return PageFacts()

    @classmethod
    def has_own_target(cls, service: Mapping[str, Any], team: Mapping[str, Any]) -> bool:
        """The service's or team's view names a target of this pager (a routing key, responders)."""
        return False

    @classmethod
    def page_close(cls, params: Mapping[str, Any]) -> tuple[str, dict[str, Any]] | None:
        """(action, params) that closes the page `page_action` with these params opened, or None.

        Sent when a page that may have gone out (its worker killed mid-call) is dropped because
        its incident resolved meanwhile: closing a page that never opened must be harmless."""
        return None

    @classmethod
    def can_page(cls, service: Mapping[str, Any], team: Mapping[str, Any], configured: set[str]) -> bool:
        """This pager can page for this service (its own target in the catalog, or configured)."""
        return cls.has_own_target(service, team) or cls.name in configured

    @classmethod
    def fallback_page(cls, facts: PageFacts, why: str, view: Mapping[str, Any]) -> dict[str, Any]:
        """`page_action` params standing in for another pager's failed page (`view`: service,
        team, incident as the rules see them)."""
        raise NotImplementedError

    @classmethod
    def notice(cls, text: str, severity: Any, ids: Mapping[str, str], view: Mapping[str, Any]) -> dict[str, Any]:
        """`notice_action` params posting `text` (already in this system's markup) to the team."""
        raise NotImplementedError

    @classmethod
    def notice_escape(cls, text: str) -> str:
        """Payload text as it must appear in `notice` text (this system's markup escaped)."""
        return text

    def describe_target(self, params: Mapping[str, Any], mask: Callable[[str], str]) -> str:
        """Where a call with these params would go (`incident-hub simulate`); secrets through `mask`."""
        return self.name

    def actions(self) -> dict[str, ActionFn]:
        """The declared `action_names`, each the method of the same name."""
        return {name: getattr(self, name) for name in sorted(self.action_names)}

    def rate_limit_key(self, call: ActionCall) -> str | None:
        """Identity of the credential a call spends (rate limits are per credential)."""
        return self.name

    def serial_key(self, call: ActionCall) -> str | None:
        """Calls with the same serial key never run at the same time, across all workers
        (e.g. one Jira issue, one Statuspage incident). None: no serialisation."""
        return None

    async def unchanged(self, action: str, call: ActionCall) -> Outcome | None:
        """The outcome of `action`, when it is known without calling out (what the call would
        send is there already: e.g. a message that shows this already), else None. The runner
        asks (under the serial lock) before it spends a rate-limit token, so a call that would
        do nothing never waits for one and never delays a call that would."""
        return None

    def secrets(self, params: Mapping[str, Any] | None = None) -> list[str]:
        """Secret values this connector may send; the runner scrubs them from anything it
        records (error texts, response bodies) in case an API or a library echoes them."""
        return []

    async def request(self, method: str, url: str, *, json_body: Any = None, headers: Mapping[str, str] | None = None,
                      timeout: float | None = None, data: Any = None, params: Mapping[str, str] | None = None
                      ) -> tuple[Outcome, Any]:
        """Send one HTTP request and classify it. Returns (outcome, parsed JSON body or None).

        Failing to connect is retryable and unambiguous (nothing was sent); a timeout or a
        broken connection after the request went out is retryable and *ambiguous*.
        """
        import aiohttp

        limit = self.timeout if timeout is None else timeout
        try:
            async with self.http.request(method, url, json=json_body, data=data, headers=headers, params=params,
                                         timeout=aiohttp.ClientTimeout(total=limit)) as resp:
                text = await resp.text(errors="replace")
                outcome = classify_status(resp.status, text, resp.headers, self.extra_retryable)
        except aiohttp.InvalidURL as e:
            return Outcome("permanent", None, detail=f"invalid URL: {e}"), None
        except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as e:
            return Outcome("retryable", None, detail=f"connection failed: {e}"), None
        except TimeoutError:
            return Outcome("retryable", None, detail=f"timed out after {limit:g}s", ambiguous=True), None
        except aiohttp.ClientError as e:
            return Outcome("retryable", None, detail=f"{type(e).__name__}: {e}", ambiguous=True), None
        parsed = None
        if text:
            try:
                parsed = json.loads(text)
            except ValueError:
                parsed = None
        return outcome, parsed
