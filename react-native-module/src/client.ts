// The typed client API over the generated bindings: camelCase methods, plain types
// (types.ts), typed errors (errors.ts), and events with subscribe/unsubscribe.
import {
  CallSettings,
  ClientConfig,
  deleteLocalData as ffiDeleteLocalData,
  PrivcommClient,
  type AudioSink,
  type ClientEvent,
  type EventListener,
  type PrivcommClientLike,
  type SecretStore,
  type SubscriptionLike,
} from './bindings';
import { KeyStoreError, sdkCall, sdkCallSync } from './errors';
import { isFlushable } from './secretStore';
import {
  callDirection,
  callStatus,
  chatConversation,
  chatMessage,
  connectionStatus,
  privcommEvent,
  type CallInfo,
  type ChatConversation,
  type ChatMessage,
  type ConnectionStatus,
  type PrivcommEvent,
  type PrivcommEventType,
} from './types';

/** Samples in one audio frame: 20 ms of 48 kHz mono. */
export const AUDIO_FRAME_SAMPLES = 960;

/** How to open a client. */
export interface PrivcommOptions {
  /** Directory of this account's database: the app's private, not backed-up storage. */
  dataDir: string;
  /** The relay, e.g. `https://relay.example.org`. */
  serverUrl: string;
  /** Keeps the database's wrapping secret (see `KeychainSecretStore`). */
  secretStore: SecretStore;
  /** Call settings; omit for the defaults. */
  call?: {
    /** Local `ip:port` addresses for media (default: every interface). */
    bindAddrs?: string[];
    /** Extra `stun:host:port` servers. */
    stunUrls?: string[];
    /** Relay all media through TURN, hiding this device's addresses from the peer. */
    relayOnly?: boolean;
    /** How long an unanswered call rings, ms (default 60,000). */
    ringTimeoutMs?: number;
  };
}

/** A page of history: newest first; pass `before` to get older messages. */
export interface HistoryQuery {
  /** The oldest message of the previous page. */
  before?: ChatMessage;
  /** 1 to 1,000 (default 50). */
  limit?: number;
}

/** Call statistics. */
export interface CallStats {
  rttMs: number | undefined;
  packetsSent: number;
  packetsReceived: number;
  packetsLost: number;
  jitterMs: number;
}

/** Stops a subscription. Calling it twice is harmless. */
export type Unsubscribe = () => void;

/** Incoming messages dropped (acked, never stored), by reason. */
export interface DroppedMessages {
  /** They reused the id of another stored message (an attempt to rewrite history). */
  forgedId: number;
  /** From blocked peers. */
  blocked: number;
  /** Over a peer's receive quota. */
  overQuota: number;
  /** Decrypted, but malformed. */
  malformed: number;
  /** Undecryptable. */
  undecryptable: number;
}

type Handler<T extends PrivcommEventType> = (event: Extract<PrivcommEvent, { type: T }>) => void;
type AnyHandler = (event: PrivcommEvent) => void;

/** Deletes the account data in `dataDir` and its secret: the way out of a lost key. */
export async function deleteLocalData(dataDir: string, secretStore: SecretStore): Promise<void> {
  await sdkCall(() => ffiDeleteLocalData(dataDir, secretStore));
}

/**
 * One Privcomm account on this device. Open it once per data directory, keep it for the
 * app's lifetime, `shutdown()` when done. Every method rejects with a `PrivcommSdkError`.
 */
export class Privcomm {
  private readonly handlers = new Set<AnyHandler>();
  private subscription: SubscriptionLike | undefined;

  private constructor(private readonly client: PrivcommClientLike) {}

  /** Opens (creating on first use) the account in `options.dataDir`. */
  static async open(options: PrivcommOptions): Promise<Privcomm> {
    const call = options.call;
    const config = ClientConfig.create({
      dataDir: options.dataDir,
      serverUrl: options.serverUrl,
      call:
        call === undefined
          ? undefined
          : CallSettings.create({
              bindAddrs: call.bindAddrs,
              stunUrls: call.stunUrls,
              relayOnly: call.relayOnly,
              ringTimeoutMs: call.ringTimeoutMs === undefined ? undefined : BigInt(call.ringTimeoutMs),
            }),
    });
    const client = await sdkCall(() => PrivcommClient.open(config, options.secretStore));
    // A new database's secret must be durable before anything reaches the relay.
    if (isFlushable(options.secretStore)) {
      try {
        await options.secretStore.flush();
      } catch (e) {
        await client.shutdown().catch(() => undefined);
        throw new KeyStoreError(
          'SecretStoreUnavailable',
          'the new database key could not be saved in the keystore',
          e instanceof Error ? e.message : undefined,
        );
      }
    }
    return new Privcomm(client);
  }

  /**
   * Has the relay text a verification code to `phoneNumber` (international form); resolves
   * with the seconds the code stays valid. `RateLimitedError` when codes come too often.
   */
  async requestVerification(phoneNumber: string): Promise<number> {
    return Number(await sdkCall(() => this.client.requestVerification(phoneNumber)));
  }

  /**
   * Registers `phoneNumber` with the `code` texted to it; returns the user id. A number
   * registered on another device moves here (that device is signed out). `pin` unlocks an
   * account with a registration lock (else `RegistrationLockedError`). Safe to repeat.
   */
  register(phoneNumber: string, code: string, pin?: string): Promise<string> {
    return sdkCall(() => this.client.register(phoneNumber, code, pin));
  }

  /**
   * Sets a registration lock with `pin` (4 to 128 characters): registering this number on
   * another device then needs the PIN too, until the account has been unused for 7 days.
   */
  setRegistrationLock(pin: string): Promise<void> {
    return sdkCall(() => this.client.setRegistrationLock(pin));
  }

  /** Removes the registration lock. */
  removeRegistrationLock(): Promise<void> {
    return sdkCall(() => this.client.removeRegistrationLock());
  }

  /** This account's user id, once registered. */
  userId(): Promise<string | undefined> {
    return sdkCall(() => this.client.userId());
  }

  /** Connects and resolves once online; the link then keeps itself up until `disconnect`. */
  connect(): Promise<void> {
    return sdkCall(() => this.client.connect());
  }

  /** Stops the link; queued messages wait for the next `connect`. */
  disconnect(): Promise<void> {
    return sdkCall(() => this.client.disconnect());
  }

  /** Hangs up, disconnects, stops every subscription and closes the store. */
  async shutdown(): Promise<void> {
    this.handlers.clear();
    this.subscription = undefined;
    await sdkCall(() => this.client.shutdown());
  }

  /** Where the link stands now. */
  connectionStatus(): ConnectionStatus {
    return connectionStatus(sdkCallSync(() => this.client.connectionState()));
  }

  /** Calls `handler` with every event of `type`; returns the way to stop. */
  on<T extends PrivcommEventType>(type: T, handler: Handler<T>): Unsubscribe {
    return this.onAny((event) => {
      if (event.type === type) handler(event as Extract<PrivcommEvent, { type: T }>);
    });
  }

  /** Calls `handler` with every event; returns the way to stop. */
  onAny(handler: AnyHandler): Unsubscribe {
    this.handlers.add(handler);
    this.ensureSubscribed();
    let active = true;
    return () => {
      if (!active) return;
      active = false;
      this.handlers.delete(handler);
      if (this.handlers.size === 0) {
        // Nobody listens: stop the core's listener thread too.
        this.subscription?.cancel();
        this.subscription = undefined;
      }
    };
  }

  private ensureSubscribed(): void {
    if (this.subscription !== undefined) return;
    const listener: EventListener = {
      onEvent: (event: ClientEvent) => this.dispatch(privcommEvent(event)),
    };
    this.subscription = sdkCallSync(() => this.client.subscribe(listener));
  }

  private dispatch(event: PrivcommEvent): void {
    for (const handler of [...this.handlers]) {
      try {
        handler(event);
      } catch (e) {
        // One failing handler must not starve the others; the event's content stays private.
        console.error(`privcomm: a ${event.type} handler threw`, e instanceof Error ? e.name : typeof e);
      }
    }
  }

  /** Finds the user with `phoneNumber`; returns their user id (the `peer` elsewhere). */
  resolvePeer(phoneNumber: string): Promise<string> {
    return sdkCall(() => this.client.resolvePeer(phoneNumber));
  }

  /** Queues `text` for `peer`; resolves with the message id at once (status `queued`). */
  sendText(peer: string, text: string): Promise<string> {
    return sdkCall(() => this.client.sendText(peer, text));
  }

  /** Conversations, most recent first. */
  async conversations(): Promise<ChatConversation[]> {
    const list = await sdkCall(() => this.client.conversations());
    return list.map(chatConversation);
  }

  /** Messages with `peer`, newest first. */
  async history(peer: string, query: HistoryQuery = {}): Promise<ChatMessage[]> {
    const before =
      query.before === undefined
        ? undefined
        : { sentAt: BigInt(query.before.sentAt), id: query.before.id };
    const page = await sdkCall(() => this.client.history(peer, before, query.limit ?? 50));
    return page.map(chatMessage);
  }

  /** One message by id. */
  async message(id: string): Promise<ChatMessage | undefined> {
    const message = await sdkCall(() => this.client.message(id));
    return message === undefined ? undefined : chatMessage(message);
  }

  /** The 60-digit safety number with `peer`, and the QR payload. */
  async safetyNumber(peer: string): Promise<{ digits: string; scannable: ArrayBuffer }> {
    return sdkCall(() => this.client.safetyNumber(peer));
  }

  /** Accepts `peer`'s new identity key after an `identityChanged` event. */
  acceptIdentity(peer: string): Promise<void> {
    return sdkCall(() => this.client.acceptIdentity(peer));
  }

  /**
   * Blocks `peer`: their messages, receipts and calls are acked and dropped unread, and
   * sending to them throws `PeerBlockedError`. Resolves false if they were blocked already.
   */
  blockPeer(peer: string): Promise<boolean> {
    return sdkCall(() => this.client.blockPeer(peer));
  }

  /** Unblocks `peer`; resolves false if they were not blocked. */
  unblockPeer(peer: string): Promise<boolean> {
    return sdkCall(() => this.client.unblockPeer(peer));
  }

  /** Every blocked peer. */
  blockedPeers(): Promise<string[]> {
    return sdkCall(() => this.client.blockedPeers());
  }

  /** Incoming messages dropped since the store was created, by reason. */
  async droppedMessages(): Promise<DroppedMessages> {
    const d = await sdkCall(() => this.client.droppedMessages());
    return {
      forgedId: Number(d.forgedId),
      blocked: Number(d.blocked),
      overQuota: Number(d.overQuota),
      malformed: Number(d.malformed),
      undecryptable: Number(d.undecryptable),
    };
  }

  /** Messages still waiting for the relay. */
  async outboxLength(): Promise<number> {
    return Number(await sdkCall(() => this.client.outboxLen()));
  }

  /** Calls `peer`; resolves with the call id. Progress arrives as `callChanged` events. */
  startCall(peer: string): Promise<string> {
    return sdkCall(() => this.client.startCall(peer));
  }

  /** Answers an incoming call. */
  acceptCall(callId: string): void {
    sdkCallSync(() => this.client.acceptCall(callId));
  }

  /** Declines an incoming call. */
  declineCall(callId: string): void {
    sdkCallSync(() => this.client.declineCall(callId));
  }

  /** Ends a call in whatever state it is. */
  hangUp(callId: string): void {
    sdkCallSync(() => this.client.hangUp(callId));
  }

  /** Mutes or unmutes the microphone. */
  setMuted(callId: string, muted: boolean): void {
    sdkCallSync(() => this.client.setMuted(callId, muted));
  }

  /** Feeds one 20 ms microphone frame (`AUDIO_FRAME_SAMPLES` samples, 48 kHz mono). */
  pushAudioFrame(callId: string, samples: Int16Array): void {
    const pcm = new ArrayBuffer(samples.length * 2);
    const view = new DataView(pcm);
    samples.forEach((sample, i) => view.setInt16(i * 2, sample, true));
    sdkCallSync(() => this.client.pushAudioFrame(callId, pcm));
  }

  /** Calls `handler` with each decoded frame of the peer's voice. */
  onAudio(handler: (callId: string, samples: Int16Array) => void): Unsubscribe {
    const sink: AudioSink = {
      onAudioFrame: (callId: string, pcm: ArrayBuffer) => {
        const view = new DataView(pcm);
        const samples = new Int16Array(pcm.byteLength / 2);
        for (let i = 0; i < samples.length; i++) samples[i] = view.getInt16(i * 2, true);
        handler(callId, samples);
      },
    };
    const subscription = sdkCallSync(() => this.client.subscribeAudio(sink));
    return () => subscription.cancel();
  }

  /** Round-trip time, loss and jitter of the call's media link. */
  async callStats(callId: string): Promise<CallStats> {
    const s = await sdkCall(() => this.client.callStats(callId));
    return {
      rttMs: s.rttMs,
      packetsSent: Number(s.packetsSent),
      packetsReceived: Number(s.packetsReceived),
      packetsLost: Number(s.packetsLost),
      jitterMs: s.jitterMs,
    };
  }

  /** The call in progress, if any. */
  currentCall(): CallInfo | undefined {
    const call = sdkCallSync(() => this.client.currentCall());
    if (call === undefined) return undefined;
    return {
      callId: call.callId,
      peer: call.peer,
      direction: callDirection(call.direction),
      status: callStatus(call.state),
    };
  }
}
