"""The one settings object, read at the process edge from flags and ``BOARDCAST_*``.

Every setting is documented in docs/settings.md. Precedence: command-line flag,
then environment variable, then the default here.
"""

from __future__ import annotations

import dataclasses
import os
import re
import socket
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from actors.directory import ClusterTimings
from actors.handshake import parse_cluster_secret
from actors.host import HostSettings
from auth.oidc import OidcSettings
from auth.oidc_flow import CodeFlowSettings
from auth.service import AuthSettings
from crdt.awareness import AwarenessLimits
from crdt.room import RoomLimits
from gateway.limits import GatewayLimits
from gateway.routing import RoutingLimits
from persistence.files import FileLimits
from persistence.history import DEFAULT_HISTORY, parse_history_policy

if TYPE_CHECKING:
    from auth.mongo_accounts import MongoAccountsSettings

ENV_PREFIX = "BOARDCAST_"


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything a Boardcast process can be told."""

    host: str = "127.0.0.1"
    port: int = 8000
    # Connections the kernel completes before the gateway accepts them. Every client
    # comes back at once after a restart; past the queue their connects wait for a SYN
    # retransmit (1 s, then 3 s). The kernel caps it at net.core.somaxconn.
    listen_backlog: int = 4096
    data_dir: str = "./data"
    store: str = "sqlite"
    address: str | None = None  # a Ray cluster to join; None starts a local one
    backend: str = "ray"  # "ray", or "local" to run board hosts in the gateway process
    hosts: int = 2  # shared board hosts (Ray actors) to run
    hosts_in_gateway: bool = False  # run this node's shared hosts in the gateway's process
    in_process_links: bool = True  # hosts take links from their own process without a socket
    build_on_demand: bool = True  # a board stored as a snapshot is built on its first change
    cluster_name: str = "boardcast"  # prefix of Ray actor names: one deployment per name
    dedicated_boards: tuple[str, ...] = ()
    extensions: tuple[str, ...] = ()  # "module:factory" specs, run in gateways and hosts
    max_frame_bytes: int = 32 * 1024 * 1024
    send_buffer_bytes: int = 16 * 1024 * 1024
    heartbeat_seconds: float = 30.0
    idle_seconds: float = 30.0
    snapshot_every: int = 500
    max_unsaved_bytes: int = 64 * 1024 * 1024  # backlog kept while the store is down
    max_update_bytes: int = 16 * 1024 * 1024  # one update; past it 4413
    max_board_bytes: int = 64 * 1024 * 1024  # one board, encoded; past it 4507
    max_held_updates: int = 64  # per connection, waiting for dependencies; past it 4409
    max_held_bytes: int = 4 * 1024 * 1024  # per connection; past it 4409
    max_held_seconds: float = 30.0  # how long an update may wait for dependencies; then 4409
    max_consistency_checks: int = 32  # whole-board checks one connection may cause; then 4409
    max_awareness_entries: int = 64  # entries in one awareness message; past it 4429
    max_awareness_state_bytes: int = 32 * 1024  # one client's presence state; past it 4429
    max_awareness_clients: int = 8  # client ids one connection may announce; past it 4429
    max_awareness_remembered: int = 4096  # clocks of departed clients kept per board
    snapshot_every_bytes: int = 8 * 1024 * 1024
    store_timeout_seconds: float = 30.0
    commit_window_seconds: float = 0.01
    max_inbox_bytes: int = 64 * 1024 * 1024  # frames queued for one loading board; past it 1013
    control_timeout_seconds: float = 10.0  # gateway calls to the cluster's directory
    connect_timeout_seconds: float = 5.0  # gateway to board host stream connect
    close_timeout_seconds: float = 5.0
    max_cached_boards: int = 100_000  # board -> host entries a gateway keeps
    max_queued_sessions: int = 10_000  # session registrations waiting for shared state
    max_queued_hooks: int = 10_000  # extension calls waiting in a host
    max_remembered_transactions: int = 10_000  # idempotency keys a host keeps
    # Web pages that may open board WebSockets, besides the gateway's own (same host and
    # port); "*" allows any. Clients that send no Origin (not browsers) are not affected.
    allowed_origins: tuple[str, ...] = ()
    read_model: bool = True  # hosts keep the task read model current (REST queries)
    # The event log and its workers (docs/events.md).
    workers: bool = True  # run the workers (analytics...) beside the hosts
    event_retention_seconds: float = 7 * 24 * 3600.0  # events older go, once consumed
    event_retention_count: int = 1_000_000  # events further behind the newest go, once consumed
    worker_batch_size: int = 500  # events per worker batch
    worker_poll_seconds: float = 0.1  # how often an idle worker looks for events
    worker_backoff_max_seconds: float = 30.0  # longest wait between retries of a failing batch
    worker_batch_pause_seconds: float = 0.0  # crash tests only: a pause around each batch
    worker_nice: int = 5  # the workers' actor process yields the CPU to hosts and gateways
    # "module:factory" specs of more workers; webhooks (docs/webhooks.md), e-mail
    # (docs/email.md) and notifications (docs/notifications.md) by default.
    worker_plugins: tuple[str, ...] = (
        "workers.webhooks_service:webhook_plugin",
        "workers.mail_service:mail_plugin",  # idle while smtp_host is ""
        "workers.notifications_service:notification_plugin",
    )
    rest_max_body_bytes: int = 32 * 1024 * 1024  # one REST request body; past it 413
    rest_max_bulk_items: int = 10_000  # tasks one bulk request may touch; past it 413
    rest_cache_ttl_seconds: float = 30.0  # query answers kept in shared state; 0: no cache
    history: str = str(DEFAULT_HISTORY)  # retention tiers, e.g. "1h:all,1d:10m,30d:1h"
    # Where board hosts listen for gateway streams: "auto" is 127.0.0.1 on a Ray cluster this
    # process started and the node's Ray IP on one it joined (--address); "node" is always
    # the node's Ray IP; 0.0.0.0 binds every interface and advertises the node's Ray IP.
    host_bind: str = "auto"
    advertise_host: str = ""  # the address gateways dial, if not the one bound ("" derives it)
    node_ip: str = ""  # the Ray node to attach to (several on one machine); "" lets Ray pick
    host_heartbeat_seconds: float = 0.5  # how often each board host beats to the directory
    host_timeout_seconds: float = 2.0  # a host silent this long is dropped; its boards move
    stop_timeout_seconds: float = 10.0  # bound on a clean stop (drain, flush, snapshot)
    redis: str | None = None  # shared state (sessions, directory cache); None: in-process
    gateway_id: str = ""  # how this gateway names itself in shared state; "" derives one
    presence_ttl_seconds: float = 15.0  # a silent gateway's sessions vanish after this
    log_level: str = "INFO"
    log_format: str = "text"  # "text" for a terminal, or "json": one object per line
    # Where spans go, as OTLP over HTTP (http://collector:4318/v1/traces); "" traces nothing.
    trace_endpoint: str = ""
    max_request_id_chars: int = 128  # a longer inbound X-Request-Id is replaced by a new one
    store_probe_seconds: float = 2.0  # a board host's store check; slower counts as unreachable
    # Who may connect (docs/security.md): "required" (accounts, tokens, roles) or "none"
    # (everyone acts as the local administrator: development and benchmarks only).
    auth: str = "required"
    auth_issuer: str = "boardcast"  # the iss and aud of the access tokens this server signs
    auth_access_ttl_seconds: float = 300.0  # an access token's life
    auth_idle_seconds: float = 7 * 24 * 3600.0  # a login unused this long ends
    auth_absolute_seconds: float = 30 * 24 * 3600.0  # a login ends this long after it began
    auth_refresh_grace_seconds: float = 10.0  # a spent refresh token still rotates this long
    auth_ticket_ttl_seconds: float = 30.0  # a single-use WebSocket ticket's life
    auth_mfa_fresh_seconds: float = 600.0  # a TOTP login counts for sensitive actions this long
    auth_key_rotation_days: float = 30.0  # signing keys older than this are replaced at start
    auth_revocation_poll_seconds: float = 0.25  # how often gateways read the revocation feed
    auth_role_cache_entries: int = 10_000  # (person, project) roles one gateway remembers
    auth_role_cache_seconds: float = 60.0  # a remembered role is read again after this long
    # What gateways and board hosts prove to each other before a frame stream opens
    # (docs/cluster-streams.md): hex or base64, at least 32 bytes; "": made up at start.
    cluster_secret: str = field(default="", repr=False)
    stream_handshake_seconds: float = 2.0  # a new gateway-host stream must authenticate within this
    max_pending_handshakes: int = 256  # streams one host lets wait in the handshake; more dropped
    # Limits at the gateway (docs/limits.md): the fields of gateway.limits.GatewayLimits.
    rest_per_ip_per_second: float = 20.0  # requests of one IP, past them 429 rate-limited
    rest_per_ip_burst: int = 100
    rest_per_user_per_second: float = 20.0  # requests of one signed-in user (check_user)
    rest_per_user_burst: int = 100
    ws_upgrades_per_ip_per_second: float = 5.0  # WebSocket upgrades of one IP; past them 429
    ws_upgrades_per_ip_burst: int = 60  # a NAT full of clients reconnecting after a restart
    max_sockets_per_ip: int = 256  # open WebSockets of one IP; past it 429 before the upgrade
    max_sockets_per_user: int = 32  # open WebSockets of one user; past it close code 4430
    login_per_username_per_hour: float = 10.0  # slow brute force on one account
    login_per_username_burst: int = 10
    login_per_ip_per_hour: float = 100.0  # slow brute force from one address
    login_per_ip_burst: int = 30
    # From TCP accept (or the end of the previous response) to a complete request head,
    # WebSocket upgrade requests included; also how long an idle keep-alive connection stays.
    handshake_timeout_seconds: float = 15.0
    body_timeout_seconds: float = 60.0  # to receive a request body in full; past it 408
    trusted_proxies: tuple[str, ...] = ()  # CIDRs whose X-Forwarded-For is believed
    max_forwarded_for_chars: int = 2048  # a longer X-Forwarded-For is ignored
    ipv6_prefix_length: int = 64  # IPv6 clients share limits per network of this size
    max_tracked_keys: int = 100_000  # buckets kept in process; least recently used dropped
    redis_fail_open: bool = True  # Redis down: allow requests and sockets (False: refuse)
    login_fail_open: bool = False  # Redis down: allow login attempts (False: refuse them)
    redis_timeout_seconds: float = 0.5  # one Redis call of a limiter
    socket_count_ttl_seconds: float = 30.0  # a dead gateway's socket counts vanish after this
    refusal_log_seconds: float = 60.0  # at most one log line per refused key in this time
    exempt_paths: tuple[str, ...] = ("/healthz", "/readyz", "/metrics")
    # Clients no per-address limit applies to: this machine (tests, benchmarks, tools on the
    # host). Behind a proxy on the same host, list it in trusted_proxies, or all are exempt.
    exempt_addresses: tuple[str, ...] = ("127.0.0.0/8", "::1")
    # Encryption at rest (docs/encryption.md): "on", "strict" (refuse unsealed records) or
    # "off". Read from the environment by every process that opens a store, hosts included.
    encryption: str = "on"
    encryption_key_file: str = ""  # "": keys/at-rest.json beside the embedded store's file
    # The account store on MongoDB (when the store URL is one; docs/security.md).
    accounts_mongo_server_selection_timeout_seconds: float = 5.0
    accounts_mongo_connect_timeout_seconds: float = 5.0
    accounts_mongo_socket_timeout_seconds: float = 20.0
    accounts_feed_gap_seconds: float = 5.0  # a revocation-feed gap is read past after this
    # An external OpenID Connect issuer whose tokens log users in (docs/oidc.md); "" is none.
    oidc_issuer: str = ""
    oidc_audience: str = ""  # Boardcast's client id at the issuer
    oidc_jwks_url: str = ""  # "" discovers it from the issuer
    oidc_algorithms: str = "RS256,ES256"
    oidc_leeway_seconds: float = 60.0
    oidc_min_refetch_seconds: float = 60.0  # at most one key-set fetch this often
    # Signing in from the browser through the issuer (authorization code flow with PKCE).
    oidc_client_secret: str = field(default="", repr=False)  # "": a public client
    oidc_redirect_uri: str = ""  # "": {scheme}://{host}/v1/auth/oidc/callback of the request
    oidc_scopes: str = "openid email profile"
    oidc_provider_name: str = ""  # the sign-in button's "Sign in with ..."; "": the issuer's host
    oidc_login_ttl_seconds: float = 600.0  # a started sign-in must come back within this
    oidc_max_pending_logins: int = 10_000  # sign-ins one gateway keeps open; more get 503
    oidc_max_code_chars: int = 2048  # the longest authorization code a callback may carry
    # Task attachments (docs/files.md): where the bytes live, what is accepted, the scan.
    files_store: str = "local"  # "local": files_dir, served by the gateway; "s3": the bucket below
    files_dir: str = ""  # "": <data_dir>/files
    files_url_key: str = field(default="", repr=False)  # hex; "": <data_dir>/keys/files-url.key
    files_max_bytes: int = 25 * 1024 * 1024  # one file; past it 413 file-too-large
    files_max_per_task: int = 50  # attachments of one task; past it 409 too-many-attachments
    files_max_name_chars: int = 200  # a longer file name is cut, keeping its extension
    files_allowed_types: tuple[str, ...] = FileLimits().allowed_types  # "*": any; else 415
    files_upload_url_seconds: float = 300.0  # a signed upload URL's life
    files_download_url_seconds: float = 300.0  # a signed download URL's life
    files_s3_bucket: str = ""
    files_s3_endpoint_url: str = ""  # "": AWS's own endpoint for the region
    files_s3_region: str = "us-east-1"
    files_s3_access_key_id: str = field(default="", repr=False)  # "": boto3's usual lookup
    files_s3_secret_access_key: str = field(default="", repr=False)
    files_s3_timeout_seconds: float = 10.0  # one S3 call's connect and read timeout
    files_clamd: str = "127.0.0.1:3310"  # clamd's TCP socket; "": no scans (files stay pending)
    files_scan_timeout_seconds: float = 120.0  # one scan; past it the scan failed (retried)
    files_scan_poll_seconds: float = 1.0  # how often the scan queue looks for due scans
    files_scan_retry_seconds: float = 5.0  # first wait after a failed scan; doubles each time
    files_scan_max_retry_seconds: float = 3600.0  # the longest wait between tries
    tls_cert: str = ""  # PEM certificate chain: serve https and wss
    tls_key: str = ""  # its private key
    # Webhooks (docs/webhooks.md).
    webhook_max_endpoints: int = 20  # endpoints of one project; past it 409 too-many-webhooks
    webhook_max_url_chars: int = 2000  # an endpoint's URL; past it 422 validation
    webhook_retry_schedule: str = "0,5,300,1800,7200,18000,36000,36000"  # seconds before each
    webhook_retry_jitter: float = 0.1  # each wait changes by up to this share of itself
    webhook_connect_timeout_seconds: float = 5.0  # to connect to a receiver
    webhook_timeout_seconds: float = 15.0  # one attempt in all: connect, send, answer
    webhook_max_response_bytes: int = 4096  # of an answer read (then dropped)
    # Networks webhooks may reach although they are not public (loopback, private...).
    webhook_allow_networks: tuple[str, ...] = ()
    webhook_disable_after_failures: int = 20  # deliveries failed in a row disable an endpoint
    webhook_disable_after_seconds: float = 432000.0  # as does no success for this long (5 d)
    webhook_rotation_grace_seconds: float = 86400.0  # a rotated secret still signs this long
    webhook_poll_seconds: float = 1.0  # how often the delivery loop looks for due deliveries
    webhook_concurrency: int = 16  # attempts in flight at once
    # People's notifications (docs/notifications.md).
    notification_reminder_poll_seconds: float = 60.0  # how often due dates are checked
    notification_due_soon_seconds: float = 86400.0  # "due soon" this long before the due date
    notification_retention_days: float = 90.0  # notifications older go
    notification_max_per_user: int = 1000  # a user's newest kept; older ones go
    notification_page_max: int = 100  # notifications one GET /v1/notifications returns at most
    notification_read_max_ids: int = 500  # ids one POST /v1/notifications/read may name
    notification_push_poll_seconds: float = 0.2  # how often a gateway reads new notifications
    notification_heartbeat_seconds: float = 15.0  # a comment on each idle stream this often
    notification_streams_per_user: int = 8  # open streams of one user on one gateway
    notification_streams_max: int = 10_000  # open streams on one gateway
    # E-mail about notifications (docs/email.md); none is sent while smtp_host is "".
    public_url: str = ""  # how people reach this server (links in e-mail); "": no links
    smtp_host: str = ""
    smtp_port: int = 25
    smtp_username: str = ""
    smtp_password: str = field(default="", repr=False)
    smtp_starttls: bool = False  # upgrade the connection with STARTTLS
    smtp_from: str = "boardcast@localhost"  # the From address
    smtp_timeout_seconds: float = 30.0  # each step of one attempt: connect, command, data
    mail_poll_seconds: float = 1.0  # how often new notifications and due e-mail are looked for
    mail_batch_size: int = 200  # notifications read per round
    mail_concurrency: int = 4  # e-mails being sent at once
    mail_max_attempts: int = 8  # attempts before an e-mail is dead-lettered
    mail_retry_base_seconds: float = 30.0  # the first wait after a failed attempt; doubles
    mail_retry_max_seconds: float = 3600.0  # the longest wait between attempts
    mail_retry_jitter: float = 0.2  # each wait changes by up to this share of itself
    mail_max_preferences_bytes: int = 8192  # a preferences body; past it 413
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def gateway_limits(self) -> GatewayLimits:
        """What the gateway allows each client address and user."""
        return GatewayLimits(
            **{spec.name: getattr(self, spec.name) for spec in dataclasses.fields(GatewayLimits)}
        )

    @property
    def oidc_settings(self) -> OidcSettings | None:
        """The external issuer, if one is configured."""
        if not self.oidc_issuer:
            return None
        return OidcSettings(
            issuer=self.oidc_issuer,
            audience=self.oidc_audience,
            jwks_url=self.oidc_jwks_url or None,
            algorithms=tuple(a.strip() for a in self.oidc_algorithms.split(",") if a.strip()),
            leeway_seconds=self.oidc_leeway_seconds,
            min_refetch_seconds=self.oidc_min_refetch_seconds,
        )

    @property
    def oidc_code_flow(self) -> CodeFlowSettings | None:
        """Boardcast as the issuer's client for browser sign-ins, if an issuer is configured."""
        if not self.oidc_issuer:
            return None
        return CodeFlowSettings(
            client_id=self.oidc_audience,
            client_secret=self.oidc_client_secret,
            redirect_uri=self.oidc_redirect_uri,
            scopes=tuple(self.oidc_scopes.split()),
            provider_name=self.oidc_provider_name,
            login_ttl_seconds=self.oidc_login_ttl_seconds,
            max_pending_logins=self.oidc_max_pending_logins,
            max_code_chars=self.oidc_max_code_chars,
        )

    @property
    def accounts_mongo(self) -> MongoAccountsSettings:
        """Bounds of the account store on MongoDB."""
        from auth.mongo_accounts import MongoAccountsSettings

        return MongoAccountsSettings(
            server_selection_timeout_seconds=self.accounts_mongo_server_selection_timeout_seconds,
            connect_timeout_seconds=self.accounts_mongo_connect_timeout_seconds,
            socket_timeout_seconds=self.accounts_mongo_socket_timeout_seconds,
            feed_gap_seconds=self.accounts_feed_gap_seconds,
        )

    @property
    def auth_settings(self) -> AuthSettings:
        """Lifetimes of logins and tokens."""
        return AuthSettings(
            issuer=self.auth_issuer,
            audience=self.auth_issuer,
            access_ttl_seconds=self.auth_access_ttl_seconds,
            idle_seconds=self.auth_idle_seconds,
            absolute_seconds=self.auth_absolute_seconds,
            refresh_grace_seconds=self.auth_refresh_grace_seconds,
            ticket_ttl_seconds=self.auth_ticket_ttl_seconds,
            mfa_fresh_seconds=self.auth_mfa_fresh_seconds,
            key_rotation_days=self.auth_key_rotation_days,
        )

    @property
    def resolved_gateway_id(self) -> str:
        """``gateway_id``, or ``<hostname>-<port>`` made safe for shared-state keys."""
        if self.gateway_id:
            return self.gateway_id
        raw = f"{socket.gethostname()}-{self.port}-{os.getpid()}"
        return re.sub(r"[^A-Za-z0-9._-]", "-", raw)[:128]

    @property
    def host_settings(self) -> HostSettings:
        """The subset a board host needs."""
        return HostSettings(
            bind_host="127.0.0.1" if self.host_bind == "auto" else self.host_bind,
            advertise_host=self.advertise_host or None,
            idle_seconds=self.idle_seconds,
            snapshot_every=self.snapshot_every,
            max_unsaved_bytes=self.max_unsaved_bytes,
            snapshot_every_bytes=self.snapshot_every_bytes,
            store_timeout_seconds=self.store_timeout_seconds,
            commit_window_seconds=self.commit_window_seconds,
            max_inbox_bytes=self.max_inbox_bytes,
            limits=self.room_limits,
            history=self.history,
            extensions=self.extensions,
            max_queued_hooks=self.max_queued_hooks,
            max_remembered_transactions=self.max_remembered_transactions,
            read_model=self.read_model,
            in_process_links=self.in_process_links,
            build_on_demand=self.build_on_demand,
            cluster_secret=parse_cluster_secret(self.cluster_secret)
            if self.cluster_secret
            else None,
            stream_handshake_seconds=self.stream_handshake_seconds,
            max_pending_handshakes=self.max_pending_handshakes,
            log_format=self.log_format,
            trace_endpoint=self.trace_endpoint,
            store_probe_seconds=self.store_probe_seconds,
        )

    @property
    def cluster_timings(self) -> ClusterTimings:
        """How fast a multi-node deployment notices a host gone."""
        return ClusterTimings(
            heartbeat_seconds=self.host_heartbeat_seconds,
            host_timeout_seconds=self.host_timeout_seconds,
        )

    @property
    def room_limits(self) -> RoomLimits:
        """What one board accepts from its clients."""
        return RoomLimits(
            max_update_bytes=self.max_update_bytes,
            max_board_bytes=self.max_board_bytes,
            max_held_updates=self.max_held_updates,
            max_held_bytes=self.max_held_bytes,
            max_held_seconds=self.max_held_seconds,
            max_consistency_checks=self.max_consistency_checks,
            awareness=AwarenessLimits(
                max_entries=self.max_awareness_entries,
                max_state_bytes=self.max_awareness_state_bytes,
                max_clients_per_connection=self.max_awareness_clients,
                max_remembered=self.max_awareness_remembered,
            ),
        )

    @property
    def routing_limits(self) -> RoutingLimits:
        """The gateway's timeouts and bounds towards board hosts."""
        return RoutingLimits(
            control_timeout_seconds=self.control_timeout_seconds,
            connect_timeout_seconds=self.connect_timeout_seconds,
            close_timeout_seconds=self.close_timeout_seconds,
            max_cached_boards=self.max_cached_boards,
            stream_handshake_seconds=self.stream_handshake_seconds,
        )

    @classmethod
    def load(cls, flags: dict[str, Any] | None = None) -> Settings:
        """Build settings from environment variables, overridden by non-None ``flags``."""
        values: dict[str, Any] = {}
        for spec in dataclasses.fields(cls):
            if spec.name == "extra":
                continue
            raw = os.environ.get(ENV_PREFIX + spec.name.upper())
            if raw is not None:
                values[spec.name] = _parse(spec.name, raw)
        for name, value in (flags or {}).items():
            if value is not None:
                values[name] = value
        settings = cls(**values)
        if settings.auth not in {"required", "none"}:
            raise ValueError(f"auth must be 'required' or 'none', not {settings.auth!r}")
        if bool(settings.tls_cert) != bool(settings.tls_key):
            raise ValueError("tls_cert and tls_key go together")
        settings.oidc_settings  # noqa: B018 - a bad issuer configuration fails at start
        settings.oidc_code_flow  # noqa: B018 - as does a bad client (redirect URI, scopes)
        settings.gateway_limits  # noqa: B018 - and so does a bad limit (a CIDR, a negative rate)
        if settings.encryption not in {"on", "strict", "off"}:
            raise ValueError(f"encryption must be on, strict or off, not {settings.encryption!r}")
        if settings.cluster_secret:
            parse_cluster_secret(settings.cluster_secret)  # too short, not hex or base64
        # Fail at start, with the setting's name, rather than at the first compaction.
        parse_history_policy(settings.history)
        if settings.log_format not in {"text", "json"}:
            raise ValueError(f"log_format must be text or json, not {settings.log_format!r}")
        if settings.listen_backlog < 1:
            raise ValueError(f"listen_backlog must be at least 1, not {settings.listen_backlog}")
        if not 0 <= settings.worker_nice <= 19:
            raise ValueError(f"worker_nice must be 0 to 19, not {settings.worker_nice}")
        return settings


#: Settings written as comma-separated lists.
_LIST_SETTINGS = frozenset(
    {
        "dedicated_boards",
        "extensions",
        "worker_plugins",
        "trusted_proxies",
        "exempt_paths",
        "exempt_addresses",
        "webhook_allow_networks",
        "files_allowed_types",
    }
)


def _parse(name: str, raw: str) -> Any:
    default = getattr(Settings(), name)
    if name in {"address", "redis"}:
        return raw or None
    if name in _LIST_SETTINGS:
        return tuple(part.strip() for part in raw.split(",") if part.strip())
    if isinstance(default, bool):
        return raw.lower() in {"1", "true", "yes", "on"}
    if isinstance(default, int):
        return int(raw)
    if isinstance(default, float):
        return float(raw)
    return raw
