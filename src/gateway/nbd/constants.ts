// NBD wire constants (magics, handshake/transmission flags, option, reply,
// command and error numbers) and the limits this server enforces. Numbers follow
// doc/proto.md of NetworkBlockDevice/nbd; section names are cited next to each group.
//
// Invariants: every value here is what goes on the wire, big-endian; nothing else
// in gateway/nbd spells a protocol number as a literal. Limits are named with units.

// --- Magics ("Newstyle negotiation", "Fixed newstyle negotiation", "Request message",
// "Simple reply message", "Structured reply chunk message"). 64-bit ones are bigint.
export const NBD_MAGIC = 0x4e42444d41474943n; // "NBDMAGIC"
export const NBD_OPTS_MAGIC = 0x49484156454f5054n; // "IHAVEOPT"
export const NBD_REP_MAGIC = 0x0003e889045565a9n;
export const NBD_REQUEST_MAGIC = 0x25609513;
export const NBD_SIMPLE_REPLY_MAGIC = 0x67446698;
export const NBD_STRUCTURED_REPLY_MAGIC = 0x668e33ef;

// --- Handshake flags (16 bits, server) and client flags (32 bits) ("Handshake flags", "Client flags").
export const NBD_FLAG_FIXED_NEWSTYLE = 1 << 0;
export const NBD_FLAG_NO_ZEROES = 1 << 1;
export const NBD_FLAG_C_FIXED_NEWSTYLE = 1 << 0;
export const NBD_FLAG_C_NO_ZEROES = 1 << 1;
/** Client flags we understand; any other bit means the client must be dropped. */
export const NBD_CLIENT_FLAGS_KNOWN = NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES;

// --- Transmission flags (16 bits) ("Transmission flags").
export const NBD_FLAG_HAS_FLAGS = 1 << 0;
export const NBD_FLAG_READ_ONLY = 1 << 1;
export const NBD_FLAG_SEND_FLUSH = 1 << 2;
export const NBD_FLAG_SEND_FUA = 1 << 3;
export const NBD_FLAG_ROTATIONAL = 1 << 4;
export const NBD_FLAG_SEND_TRIM = 1 << 5;
export const NBD_FLAG_SEND_WRITE_ZEROES = 1 << 6;
export const NBD_FLAG_SEND_DF = 1 << 7;
export const NBD_FLAG_CAN_MULTI_CONN = 1 << 8;
export const NBD_FLAG_SEND_RESIZE = 1 << 9;
export const NBD_FLAG_SEND_CACHE = 1 << 10;
export const NBD_FLAG_SEND_FAST_ZERO = 1 << 11;

// --- Option types ("Option types").
export const NBD_OPT_EXPORT_NAME = 1;
export const NBD_OPT_ABORT = 2;
export const NBD_OPT_LIST = 3;
export const NBD_OPT_PEEK_EXPORT = 4;
export const NBD_OPT_STARTTLS = 5;
export const NBD_OPT_INFO = 6;
export const NBD_OPT_GO = 7;
export const NBD_OPT_STRUCTURED_REPLY = 8;
export const NBD_OPT_LIST_META_CONTEXT = 9;
export const NBD_OPT_SET_META_CONTEXT = 10;
export const NBD_OPT_EXTENDED_HEADERS = 11;

// --- Option reply types ("Option reply types"). Errors have bit 31 set.
export const NBD_REP_ACK = 1;
export const NBD_REP_SERVER = 2;
export const NBD_REP_INFO = 3;
export const NBD_REP_META_CONTEXT = 4;
const NBD_REP_FLAG_ERROR = 0x80000000;
export const NBD_REP_ERR_UNSUP = NBD_REP_FLAG_ERROR + 1;
export const NBD_REP_ERR_POLICY = NBD_REP_FLAG_ERROR + 2;
export const NBD_REP_ERR_INVALID = NBD_REP_FLAG_ERROR + 3;
export const NBD_REP_ERR_PLATFORM = NBD_REP_FLAG_ERROR + 4;
export const NBD_REP_ERR_TLS_REQD = NBD_REP_FLAG_ERROR + 5;
export const NBD_REP_ERR_UNKNOWN = NBD_REP_FLAG_ERROR + 6;
export const NBD_REP_ERR_SHUTDOWN = NBD_REP_FLAG_ERROR + 7;
export const NBD_REP_ERR_BLOCK_SIZE_REQD = NBD_REP_FLAG_ERROR + 8;
export const NBD_REP_ERR_TOO_BIG = NBD_REP_FLAG_ERROR + 9;

// --- NBD_REP_INFO information types ("NBD_REP_INFO").
export const NBD_INFO_EXPORT = 0;
export const NBD_INFO_NAME = 1;
export const NBD_INFO_DESCRIPTION = 2;
export const NBD_INFO_BLOCK_SIZE = 3;

// --- Commands ("Request types").
export const NBD_CMD_READ = 0;
export const NBD_CMD_WRITE = 1;
export const NBD_CMD_DISC = 2;
export const NBD_CMD_FLUSH = 3;
export const NBD_CMD_TRIM = 4;
export const NBD_CMD_CACHE = 5;
export const NBD_CMD_WRITE_ZEROES = 6;
export const NBD_CMD_BLOCK_STATUS = 7;

// --- Command flags ("Command flags").
export const NBD_CMD_FLAG_FUA = 1 << 0;
export const NBD_CMD_FLAG_NO_HOLE = 1 << 1;
export const NBD_CMD_FLAG_DF = 1 << 2;
export const NBD_CMD_FLAG_REQ_ONE = 1 << 3;
export const NBD_CMD_FLAG_FAST_ZERO = 1 << 4;

// --- Structured replies ("Structured reply flags", "Structured reply types").
export const NBD_REPLY_FLAG_DONE = 1 << 0;
export const NBD_REPLY_TYPE_NONE = 0;
export const NBD_REPLY_TYPE_OFFSET_DATA = 1;
export const NBD_REPLY_TYPE_OFFSET_HOLE = 2;
export const NBD_REPLY_TYPE_BLOCK_STATUS = 5;
export const NBD_REPLY_TYPE_ERROR = (1 << 15) + 1;
export const NBD_REPLY_TYPE_ERROR_OFFSET = (1 << 15) + 2;

// --- base:allocation status flags ("base:allocation metadata context").
export const NBD_STATE_HOLE = 1 << 0;
export const NBD_STATE_ZERO = 1 << 1;
export const META_CONTEXT_BASE_ALLOCATION = 'base:allocation';
/** The id we hand out for base:allocation in NBD_OPT_SET_META_CONTEXT (transient per spec). */
export const META_CONTEXT_ID_BASE_ALLOCATION = 1;

// --- Error values ("Error values").
export const NBD_EPERM = 1;
export const NBD_EIO = 5;
export const NBD_ENOMEM = 12;
export const NBD_EINVAL = 22;
export const NBD_ENOSPC = 28;
export const NBD_EOVERFLOW = 75;
export const NBD_ENOTSUP = 95;
export const NBD_ESHUTDOWN = 108;

// --- Wire sizes.
export const SERVER_GREETING_BYTES = 18; // NBDMAGIC + IHAVEOPT + 16-bit handshake flags
export const CLIENT_FLAGS_BYTES = 4;
export const OPTION_HEADER_BYTES = 16; // IHAVEOPT + option + length
export const OPTION_REPLY_HEADER_BYTES = 20; // magic + option + type + length
export const EXPORT_NAME_REPLY_ZEROES_BYTES = 124;
export const REQUEST_HEADER_BYTES = 28;
export const SIMPLE_REPLY_HEADER_BYTES = 16;
export const STRUCTURED_REPLY_HEADER_BYTES = 20;
export const OFFSET_DATA_HEADER_BYTES = STRUCTURED_REPLY_HEADER_BYTES + 8;

// --- Limits this server enforces.
/** Largest option payload we accept; larger → NBD_REP_ERR_TOO_BIG and hard disconnect. */
export const OPTION_DATA_BYTES_MAX = 64 * 1024;
/** "Conventions": strings MUST be no longer than 4096 bytes. */
export const STRING_BYTES_MAX = 4096;
/** "Size constraints": block sizes we advertise in NBD_INFO_BLOCK_SIZE. */
export const BLOCK_SIZE_MIN_BYTES = 512;
export const BLOCK_SIZE_PREFERRED_BYTES = 4096;
export const PAYLOAD_BYTES_MAX = 32 * 1024 * 1024;
/** Requests being decoded or executed per connection before we stop reading the socket. */
export const IN_FLIGHT_REQUESTS_MAX = 64;
/** Write payloads + read reply buffers held per connection before we stop reading the socket. */
export const BUFFERED_BYTES_MAX = 32 * 1024 * 1024;
/** NBD_CMD_BLOCK_STATUS: we look at most this far past the offset in one reply. */
export const BLOCK_STATUS_QUERY_BYTES_MAX = 1024 * 1024 * 1024;
/** NBD_CMD_BLOCK_STATUS: descriptors per reply chunk (spec says SHOULD NOT exceed 2^20). */
export const BLOCK_STATUS_DESCRIPTORS_MAX = 64 * 1024;
/** The highest offset we can represent exactly as a JS number. */
export const OFFSET_BYTES_MAX = 2 ** 53;
/** Structured error chunks carry a human message; cap it well under the 4096-byte string limit. */
export const ERROR_MESSAGE_BYTES_MAX = 256;
/** The export used when a client asks for the empty ("default") name. */
export const DEFAULT_EXPORT_NAME = 'vol0';
