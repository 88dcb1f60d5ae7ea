# Every bound of the protocol in one place: docs/PROTOCOL.md section 7 cites these names, and a
# change here is a change of the protocol (the two change in the same commit).
from __future__ import annotations

import ipaddress

PROTOCOL_VERSION = 2  # 2: CurveZMQ on every link, keys in gossip and walk origins

ID_BYTES = 16  # node ids and query ids
HASH_BYTES = 32  # BLAKE3 digest
KEY_BYTES = 32  # a Curve25519 public key
MAX_HEADER = 4608 * 1024  # one CBOR header frame between peers (the largest valid: 4,440,435)
MAX_ITEMS = 16_384  # CBOR items declared in one such header (the largest valid: 11,273)
MAX_CONTROL_HEADER = 8 * 1024 * 1024  # one header on the local control endpoint
MAX_CONTROL_ITEMS = 65_536  # items in one control header (a full status-ok: 46,439)
ROUTER_QUEUE = 16  # messages a node's ROUTER queues per connection before it stops reading
MAX_PAYLOAD = 16 * 1024 * 1024  # one raw chunk-data frame
MAX_FRAME = max(MAX_HEADER, MAX_PAYLOAD)  # ZMQ_MAXMSGSIZE of a link, which receives chunk data
MIN_CHUNK_SIZE = 16 * 1024
MAX_CHUNK_SIZE = 16 * 1024 * 1024
MAX_CHUNKS = 131_072  # chunk hashes in one file-info: 4 MiB of hashes
MAX_FILE_SIZE = MAX_CHUNKS * MAX_CHUNK_SIZE  # 2 TiB
MAX_REQ_ID = 2**63 - 1
MAX_NAME_BYTES = 255
MAX_PATH_BYTES = 4096
MAX_PATTERN_BYTES = 1024
MAX_TEXT_BYTES = 1024  # display names, error reasons
MAX_REASON_CHARS = 200  # our own error reasons; fits MAX_TEXT_BYTES in any UTF-8
MAX_HITS = 1000  # hits in one reply
MAX_LIST = 1000  # files in one list-ok page
MAX_FEATURES = 16  # optional requests named in one hello-ok
MAX_FEATURE_BYTES = 32  # one such name
MAX_SHARES = 64  # shared folders named in one status-ok
MAX_COUNT = 1_000_000_000  # file counts and the like
MAX_GOSSIP = 64  # peers named in one hello-ok
MAX_TTL = 255  # hops a walk may make
MAX_PATH = 256  # node ids in a walk's path: its own visits and what it was told to avoid
MAX_WALKERS = 2048  # walker numbers: twice the most walkers a search may have
MAX_TRACE = 1000  # hops reported in one find-ok (the node reports at most this many)
MAX_FOUND = 200  # files reported in one find-ok (the best-ranked)
MAX_HOLDERS = 16  # holders the node reports per file in one find-ok
MAX_MEMBERS = 1024  # rows in one status-ok (a full one stays below MAX_CONTROL_HEADER)
MAX_HOST_BYTES = 253  # a DNS name at most
MAX_DETAIL_BYTES = 800  # how a peer was learned (interface, via whom)
MAX_TIME_MS = 2**53  # Unix times in ms
INC_BYTES = 8  # incarnation: random per process run, so a restart is told from a reconnect
TOKEN_BYTES = 16
MAX_NAMED = 64  # peers a control request may name
MAX_FAILURES = 64  # rows in one status-ok's `failed`
MAX_LOCAL_HITS = 100  # the node's own matches in one find-ok
THIS_NETWORK = ipaddress.IPv4Network("0.0.0.0/8")  # noqa: S104 -- RFC 1122 "this host"
