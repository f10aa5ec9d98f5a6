// The seed's chatStore: conversations and messages, fed by the core's events. Sending is
// optimistic: the message appears at once as `queued` under a local id, takes the core's
// id when `sendText` resolves, then moves to `sent` and `delivered` as the events arrive.
import { createStore, type StoreApi } from 'zustand/vanilla';

import type { Privcomm, Unsubscribe } from '../client';
import { toSdkError, type PrivcommSdkError } from '../errors';
import type { ChatConversation, ChatMessage, MessageStatus } from '../types';

/** The chat state and its actions. */
export interface ChatState {
  /** Conversations, most recent first. */
  conversations: ChatConversation[];
  /** Loaded messages per peer, oldest first. */
  messages: Record<string, ChatMessage[]>;
  /** The last failure of an action. */
  error: PrivcommSdkError | undefined;
  /** Loads the conversation list from the store. */
  loadConversations(): Promise<void>;
  /** Loads the newest `limit` messages with `peer`. */
  loadHistory(peer: string, limit?: number): Promise<void>;
  /** Loads `limit` messages older than the oldest loaded one. */
  loadOlder(peer: string, limit?: number): Promise<void>;
  /** Sends `text` to `peer`, showing it at once; resolves with the message id. */
  sendText(peer: string, text: string): Promise<string>;
}

/** A chat store with the subscription that feeds it; `dispose()` stops the feed. */
export interface ChatStore extends StoreApi<ChatState> {
  dispose: Unsubscribe;
}

// Statuses only move forward: a late `sent` never overwrites `delivered`.
const rank: Record<MessageStatus, number> = {
  queued: 0,
  sent: 1,
  delivered: 2,
  received: 2,
  failed: 3,
};

function advance(current: MessageStatus, next: MessageStatus): MessageStatus {
  return rank[next] > rank[current] ? next : current;
}

function byTime(a: ChatMessage, b: ChatMessage): number {
  return a.sentAt - b.sentAt || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0);
}

let localIds = 0;

/** Creates the chat store for `client`. */
export function createChatStore(client: Privcomm): ChatStore {
  // Status events that arrived before `sendText` resolved with their message's id.
  const early = new Map<string, MessageStatus>();

  const store = createStore<ChatState>()((set, get) => {
    const fail = (e: unknown): PrivcommSdkError => {
      const error = toSdkError(e);
      set({ error });
      return error;
    };

    const updateMessage = (peer: string, id: string, change: (m: ChatMessage) => ChatMessage) => {
      set((state) => {
        const list = state.messages[peer];
        if (list === undefined || !list.some((m) => m.id === id)) return state;
        return { messages: { ...state.messages, [peer]: list.map((m) => (m.id === id ? change(m) : m)) } };
      });
    };

    const touchConversation = (peer: string, at: number) => {
      set((state) => {
        const others = state.conversations.filter((c) => c.peer !== peer);
        const previous = state.conversations.find((c) => c.peer === peer);
        const lastActivity = Math.max(previous?.lastActivity ?? 0, at);
        return { conversations: [{ peer, lastActivity }, ...others] };
      });
    };

    return {
      conversations: [],
      messages: {},
      error: undefined,

      async loadConversations() {
        try {
          set({ conversations: await client.conversations() });
        } catch (e) {
          throw fail(e);
        }
      },

      async loadHistory(peer, limit = 50) {
        try {
          const page = await client.history(peer, { limit });
          set((state) => {
            // Keep optimistic messages that the store does not know yet.
            const pending = (state.messages[peer] ?? []).filter(
              (m) => m.status === 'queued' && !page.some((p) => p.id === m.id),
            );
            return { messages: { ...state.messages, [peer]: [...page.reverse(), ...pending] } };
          });
        } catch (e) {
          throw fail(e);
        }
      },

      async loadOlder(peer, limit = 50) {
        const oldest = get().messages[peer]?.[0];
        if (oldest === undefined) return get().loadHistory(peer, limit);
        try {
          const page = await client.history(peer, { before: oldest, limit });
          set((state) => ({
            messages: { ...state.messages, [peer]: [...page.reverse(), ...(state.messages[peer] ?? [])] },
          }));
        } catch (e) {
          throw fail(e);
        }
      },

      async sendText(peer, text) {
        localIds += 1;
        const localId = `local-${localIds}`;
        const now = Date.now();
        const optimistic: ChatMessage = { id: localId, peer, outgoing: true, body: text, sentAt: now, status: 'queued' };
        set((state) => ({ messages: { ...state.messages, [peer]: [...(state.messages[peer] ?? []), optimistic] } }));
        touchConversation(peer, now);
        let id: string;
        try {
          id = await client.sendText(peer, text);
        } catch (e) {
          updateMessage(peer, localId, (m) => ({ ...m, status: 'failed' }));
          throw fail(e);
        }
        const status = early.get(id);
        early.delete(id);
        updateMessage(peer, localId, (m) => ({ ...m, id, status: advance(m.status, status ?? 'queued') }));
        return id;
      },
    };
  });

  const onStatus = (id: string, status: MessageStatus) => {
    const { messages } = store.getState();
    const peer = Object.keys(messages).find((p) => messages[p]?.some((m) => m.id === id));
    if (peer === undefined) {
      early.set(id, advance(early.get(id) ?? 'queued', status));
      return;
    }
    store.setState((state) => ({
      messages: {
        ...state.messages,
        [peer]: (state.messages[peer] ?? []).map((m) => (m.id === id ? { ...m, status: advance(m.status, status) } : m)),
      },
    }));
  };

  const onReceived = (message: ChatMessage) => {
    store.setState((state) => {
      const list = state.messages[message.peer] ?? [];
      if (list.some((m) => m.id === message.id)) return state;
      return { messages: { ...state.messages, [message.peer]: [...list, message].sort(byTime) } };
    });
    store.setState((state) => {
      const others = state.conversations.filter((c) => c.peer !== message.peer);
      return { conversations: [{ peer: message.peer, lastActivity: Date.now() }, ...others] };
    });
  };

  const unsubscribe = client.onAny((event) => {
    switch (event.type) {
      case 'messageReceived':
        onReceived(event.message);
        break;
      case 'messageStatusChanged':
        onStatus(event.id, event.status);
        break;
      case 'eventsMissed': {
        // Missed events are in the store: reload what is shown.
        const state = store.getState();
        void state.loadConversations().catch(() => undefined);
        for (const peer of Object.keys(state.messages)) void state.loadHistory(peer).catch(() => undefined);
        break;
      }
      default:
        break;
    }
  });

  return Object.assign(store, { dispose: unsubscribe });
}
