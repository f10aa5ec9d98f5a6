// Plain, JSON-friendly shapes of what the core reports, for app code and Zustand stores:
// string unions instead of the generated numeric enums and tagged classes, numbers
// instead of bigint (times in ms since the epoch fit a double exactly).
import {
  CallDirection,
  CallState,
  CallState_Tags,
  ClientEvent,
  ClientEvent_Tags,
  ConnectionState,
  ConnectionState_Tags,
  EndReason,
  MessageState,
  type Conversation as FfiConversation,
  type Message as FfiMessage,
} from './bindings';

/** Where a message is in its life. */
export type MessageStatus = 'queued' | 'sent' | 'delivered' | 'received' | 'failed';

/** A message as the app sees it. */
export interface ChatMessage {
  id: string;
  /** The other party's user id. */
  peer: string;
  outgoing: boolean;
  body: string;
  /** When the sender queued it, ms since the epoch (sender's clock). */
  sentAt: number;
  status: MessageStatus;
}

/** A conversation in the list. */
export interface ChatConversation {
  peer: string;
  /** Time of the last message, ms since the epoch. */
  lastActivity: number;
}

/** The link to the relay. */
export type ConnectionStatus =
  | { kind: 'offline' }
  | { kind: 'connecting' }
  | { kind: 'connected' }
  | { kind: 'reconnecting'; attempt: number; inMs: number };

/** Why a call ended. */
export type CallEndReason =
  | 'hungUp'
  | 'declined'
  | 'busy'
  | 'noAnswer'
  | 'failed'
  | 'connectionLost'
  | 'glare';

/** Where a call stands. */
export type CallStatus =
  | { kind: 'outgoingRinging' }
  | { kind: 'incomingRinging' }
  | { kind: 'connecting' }
  | { kind: 'connected' }
  | { kind: 'ended'; reason: CallEndReason };

/** A call as the app sees it. */
export interface CallInfo {
  callId: string;
  peer: string;
  direction: 'outgoing' | 'incoming';
  status: CallStatus;
}

/** Everything the client announces. */
export type PrivcommEvent =
  | { type: 'messageReceived'; message: ChatMessage }
  | { type: 'messageStatusChanged'; id: string; status: MessageStatus }
  | { type: 'connectionChanged'; status: ConnectionStatus }
  | { type: 'identityChanged'; peer: string }
  | { type: 'decryptionFailed'; peer: string }
  | { type: 'connectedElsewhere' }
  | ({ type: 'callChanged' } & CallInfo)
  | { type: 'eventsMissed'; count: number };

/** The `type`s of `PrivcommEvent`. */
export type PrivcommEventType = PrivcommEvent['type'];

export function messageStatus(state: MessageState): MessageStatus {
  switch (state) {
    case MessageState.Queued:
      return 'queued';
    case MessageState.Sent:
      return 'sent';
    case MessageState.Delivered:
      return 'delivered';
    case MessageState.Received:
      return 'received';
    case MessageState.Failed:
      return 'failed';
  }
}

export function chatMessage(m: FfiMessage): ChatMessage {
  return {
    id: m.id,
    peer: m.peer,
    outgoing: m.outgoing,
    body: m.body,
    sentAt: Number(m.sentAt),
    status: messageStatus(m.state),
  };
}

export function chatConversation(c: FfiConversation): ChatConversation {
  return { peer: c.peer, lastActivity: Number(c.lastActivity) };
}

export function connectionStatus(state: ConnectionState): ConnectionStatus {
  switch (state.tag) {
    case ConnectionState_Tags.Offline:
      return { kind: 'offline' };
    case ConnectionState_Tags.Connecting:
      return { kind: 'connecting' };
    case ConnectionState_Tags.Connected:
      return { kind: 'connected' };
    case ConnectionState_Tags.Reconnecting:
      return { kind: 'reconnecting', attempt: state.inner.attempt, inMs: Number(state.inner.inMs) };
  }
}

function endReason(reason: EndReason): CallEndReason {
  switch (reason) {
    case EndReason.HungUp:
      return 'hungUp';
    case EndReason.Declined:
      return 'declined';
    case EndReason.Busy:
      return 'busy';
    case EndReason.NoAnswer:
      return 'noAnswer';
    case EndReason.Failed:
      return 'failed';
    case EndReason.ConnectionLost:
      return 'connectionLost';
    case EndReason.Glare:
      return 'glare';
  }
}

export function callStatus(state: CallState): CallStatus {
  switch (state.tag) {
    case CallState_Tags.OutgoingRinging:
      return { kind: 'outgoingRinging' };
    case CallState_Tags.IncomingRinging:
      return { kind: 'incomingRinging' };
    case CallState_Tags.Connecting:
      return { kind: 'connecting' };
    case CallState_Tags.Connected:
      return { kind: 'connected' };
    case CallState_Tags.Ended:
      return { kind: 'ended', reason: endReason(state.inner.reason) };
  }
}

export function callDirection(direction: CallDirection): 'outgoing' | 'incoming' {
  return direction === CallDirection.Outgoing ? 'outgoing' : 'incoming';
}

export function privcommEvent(event: ClientEvent): PrivcommEvent {
  switch (event.tag) {
    case ClientEvent_Tags.MessageReceived:
      return { type: 'messageReceived', message: chatMessage(event.inner.message) };
    case ClientEvent_Tags.MessageStateChanged:
      return {
        type: 'messageStatusChanged',
        id: event.inner.id,
        status: messageStatus(event.inner.state),
      };
    case ClientEvent_Tags.ConnectionStateChanged:
      return { type: 'connectionChanged', status: connectionStatus(event.inner.state) };
    case ClientEvent_Tags.IdentityChanged:
      return { type: 'identityChanged', peer: event.inner.peer };
    case ClientEvent_Tags.DecryptionFailed:
      return { type: 'decryptionFailed', peer: event.inner.peer };
    case ClientEvent_Tags.ConnectedElsewhere:
      return { type: 'connectedElsewhere' };
    case ClientEvent_Tags.CallStateChanged:
      return {
        type: 'callChanged',
        callId: event.inner.callId,
        peer: event.inner.peer,
        direction: callDirection(event.inner.direction),
        status: callStatus(event.inner.state),
      };
    case ClientEvent_Tags.EventsMissed:
      return { type: 'eventsMissed', count: Number(event.inner.count) };
  }
}
