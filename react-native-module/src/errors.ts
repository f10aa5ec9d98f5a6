import { ErrorCategory, PrivcommError, PrivcommError_Tags } from './bindings';

/** Every failure code of the core (`PrivcommError` in the Rust bindings). */
export type PrivcommErrorCode = `${PrivcommError_Tags}`;

/**
 * What kind of failure an error is, and so what the app should do: decided by the core
 * (`ErrorCategory` in Rust), the same for Kotlin and TypeScript.
 */
export type ErrorKind =
  | 'transient'
  | 'notConnected'
  | 'invalidInput'
  | 'peer'
  | 'account'
  | 'localDataLost'
  | 'updateRequired'
  | 'closed'
  | 'call'
  | 'failed';

function errorKind(category: ErrorCategory | undefined): ErrorKind {
  switch (category) {
    case ErrorCategory.Transient:
      return 'transient';
    case ErrorCategory.NotConnected:
      return 'notConnected';
    case ErrorCategory.InvalidInput:
      return 'invalidInput';
    case ErrorCategory.Peer:
      return 'peer';
    case ErrorCategory.Account:
      return 'account';
    case ErrorCategory.LocalDataLost:
      return 'localDataLost';
    case ErrorCategory.UpdateRequired:
      return 'updateRequired';
    case ErrorCategory.Closed:
      return 'closed';
    case ErrorCategory.Call:
      return 'call';
    default:
      return 'failed';
  }
}

/** Base class of every error this package throws; `code` names the core's failure. */
export class PrivcommSdkError extends Error {
  /** The core's failure code, e.g. `NotConnected`, or `Unknown` for anything else. */
  readonly code: PrivcommErrorCode | 'Unknown';
  /** The core's explanation, a sentence (never secret material). */
  readonly detail: string | undefined;
  /** What the app should do about it, as the core decided. */
  kind: ErrorKind = 'failed';

  constructor(code: PrivcommErrorCode | 'Unknown', message: string, detail?: string) {
    super(message);
    this.name = new.target.name;
    this.code = code;
    this.detail = detail;
  }

  /** True when the same call may succeed later without the app changing anything. */
  get retryable(): boolean {
    return this.kind === 'transient';
  }
}

/** The operation needs a live connection: call `connect()` first. */
export class NotConnectedError extends PrivcommSdkError {}
/** The relay could not be reached. */
export class NetworkError extends PrivcommSdkError {}
/** The relay refused the request. */
export class RelayError extends PrivcommSdkError {
  constructor(
    message: string,
    /** HTTP status. */
    readonly status: number,
    /** The relay's error code (docs/PROTOCOL.md), e.g. `not_found`. */
    readonly relayCode: string | undefined,
    detail: string,
  ) {
    super('Relay', message, detail);
  }
}
/** Bad input from the app (a malformed id, empty text, a bad phone number, …). */
export class InvalidArgumentError extends PrivcommSdkError {}
/** No session with this peer and no way to start one: `resolvePeer` first. */
export class UnknownPeerError extends PrivcommSdkError {
  constructor(message: string, readonly peer: string) {
    super('UnknownPeer', message);
  }
}
/** The peer is blocked: `unblockPeer` first. */
export class PeerBlockedError extends PrivcommSdkError {
  constructor(message: string, readonly peer: string) {
    super('PeerBlocked', message);
  }
}
/** The peer's identity key changed; `acceptIdentity` after comparing safety numbers. */
export class IdentityChangedError extends PrivcommSdkError {
  constructor(message: string, readonly peer: string) {
    super('IdentityChanged', message);
  }
}
/** Not registered yet (`NoAccount`) or registered with another number (`AccountExists`). */
export class AccountError extends PrivcommSdkError {}
/**
 * The verification code is wrong (`InvalidCode`: check it) or expired (`CodeExpired`:
 * `requestVerification` again).
 */
export class VerificationError extends PrivcommSdkError {}
/**
 * The number's account has a registration lock: `register` again with its PIN, or after
 * `retryAfterSecs`, when the lock lapses.
 */
export class RegistrationLockedError extends PrivcommSdkError {
  constructor(message: string, readonly retryAfterSecs: number, detail?: string) {
    super('RegistrationLocked', message, detail);
  }
}
/** Too many attempts (codes for this number, wrong PINs): retry after `retryAfterSecs`. */
export class RateLimitedError extends PrivcommSdkError {
  constructor(message: string, readonly retryAfterSecs: number, detail?: string) {
    super('RateLimited', message, detail);
  }
}
/** The client was shut down. */
export class ClosedError extends PrivcommSdkError {}
/**
 * The key protecting the local database: lost or wrong (`SecretLost`, `WrongKey`,
 * `MissingKey`: recover with `deleteLocalData`), or the secret store failing
 * (`SecretStoreUnavailable`: `retryable`, try again later; `SecretStore`).
 */
export class KeyStoreError extends PrivcommSdkError {}
/** The local database is damaged or from a newer version. */
export class StorageError extends PrivcommSdkError {}
/** A Signal protocol failure, or the relay broke the protocol. */
export class ProtocolError extends PrivcommSdkError {}
/** A call could not be placed or changed (`CallInProgress`, `NoSuchCall`, …). */
export class CallError extends PrivcommSdkError {}
/** A bug in the core or its bindings. */
export class InternalError extends PrivcommSdkError {}

type Inner = {
  detail?: string;
  category?: ErrorCategory;
  peer?: string;
  status?: number;
  code?: string;
  callId?: string;
  retryAfterSecs?: bigint | number;
};

function innerOf(e: unknown): Inner {
  const inner = (e as { inner?: unknown }).inner;
  return inner !== null && typeof inner === 'object' ? (inner as Inner) : {};
}

/** Converts whatever the generated bindings threw into a `PrivcommSdkError` subclass. */
export function toSdkError(e: unknown): PrivcommSdkError {
  if (e instanceof PrivcommSdkError) return e;
  if (!PrivcommError.instanceOf(e)) {
    const message = e instanceof Error ? e.message : String(e);
    return new InternalError('Unknown', message);
  }
  const code = (e as { tag: PrivcommError_Tags }).tag;
  const inner = innerOf(e);
  const error = fromCode(code, inner);
  error.kind = errorKind(inner.category);
  return error;
}

function fromCode(code: PrivcommError_Tags, inner: Inner): PrivcommSdkError {
  const detail = inner.detail;
  const message = detail !== undefined ? `${code}: ${detail}` : code;
  switch (code) {
    case PrivcommError_Tags.NotConnected:
      return new NotConnectedError(code, message);
    case PrivcommError_Tags.Network:
      return new NetworkError(code, message, detail);
    case PrivcommError_Tags.Relay:
      return new RelayError(message, inner.status ?? 0, inner.code, detail ?? '');
    case PrivcommError_Tags.InvalidArgument:
      return new InvalidArgumentError(code, message, detail);
    case PrivcommError_Tags.UnknownPeer:
      return new UnknownPeerError(message, inner.peer ?? '');
    case PrivcommError_Tags.IdentityChanged:
      return new IdentityChangedError(message, inner.peer ?? '');
    case PrivcommError_Tags.PeerBlocked:
      return new PeerBlockedError(message, inner.peer ?? '');
    case PrivcommError_Tags.NoAccount:
    case PrivcommError_Tags.AccountExists:
      return new AccountError(code, message);
    case PrivcommError_Tags.InvalidCode:
    case PrivcommError_Tags.CodeExpired:
      return new VerificationError(code, message, detail);
    case PrivcommError_Tags.RegistrationLocked:
      return new RegistrationLockedError(message, Number(inner.retryAfterSecs ?? 0), detail);
    case PrivcommError_Tags.RateLimited:
      return new RateLimitedError(message, Number(inner.retryAfterSecs ?? 0), detail);
    case PrivcommError_Tags.Closed:
      return new ClosedError(code, message);
    case PrivcommError_Tags.WrongKey:
    case PrivcommError_Tags.MissingKey:
    case PrivcommError_Tags.SecretLost:
    case PrivcommError_Tags.SecretStoreUnavailable:
    case PrivcommError_Tags.SecretStore:
      return new KeyStoreError(code, message, detail);
    case PrivcommError_Tags.Tampered:
    case PrivcommError_Tags.UnsupportedFormat:
    case PrivcommError_Tags.Database:
    case PrivcommError_Tags.SchemaTooNew:
      return new StorageError(code, message, detail);
    case PrivcommError_Tags.NoSession:
    case PrivcommError_Tags.DuplicateMessage:
    case PrivcommError_Tags.InvalidMessage:
    case PrivcommError_Tags.InvalidBundle:
    case PrivcommError_Tags.Protocol:
    case PrivcommError_Tags.BadRelayResponse:
      return new ProtocolError(code, message, detail);
    case PrivcommError_Tags.CallInProgress:
    case PrivcommError_Tags.NoSuchCall:
    case PrivcommError_Tags.TurnUnavailable:
    case PrivcommError_Tags.Call:
      return new CallError(code, message, detail ?? inner.callId);
    case PrivcommError_Tags.Internal:
      return new InternalError(code, message, detail);
  }
}

/** Runs `call`, rethrowing its failure as a `PrivcommSdkError`. */
export async function sdkCall<T>(call: () => Promise<T> | T): Promise<T> {
  try {
    return await call();
  } catch (e) {
    throw toSdkError(e);
  }
}

/** The synchronous form of `sdkCall`. */
export function sdkCallSync<T>(call: () => T): T {
  try {
    return call();
  } catch (e) {
    throw toSdkError(e);
  }
}
