// Operating errors returned by the raft core, e.g. from propose(), or thrown by
// readIndex(). Stable codes; the caller maps them to client redirects or
// back-pressure. ERR_RAFT_* are raft-specific and not (yet) in stdx ErrorCode;
// ERR_LIMIT and ERR_PROTOCOL match the stdx codes of the same meaning.

export type RaftErrorCode =
  | 'ERR_RAFT_NOT_LEADER' // this node is not the leader; leaderId is a hint (NONE if unknown)
  | 'ERR_RAFT_CONF_CHANGE' // a membership change was refused (one already pending, or invalid for the current conf)
  | 'ERR_LIMIT' // too many uncommitted proposals or pending reads, or an entry larger than a message may carry
  | 'ERR_PROTOCOL'; // bytes that do not decode (e.g. a malformed ConfChange)

export class RaftError extends Error {
  readonly code: RaftErrorCode;
  /** For ERR_RAFT_NOT_LEADER: the leader this node knows of, or 0 (NONE). */
  readonly leaderId: number;
  constructor(code: RaftErrorCode, message: string, leaderId = 0) {
    super(message);
    this.code = code;
    this.leaderId = leaderId;
    this.name = 'RaftError';
  }
}
