// The seed's userStore: who this device is and how its link to the relay stands.
import { createStore, type StoreApi } from 'zustand/vanilla';

import type { Privcomm, Unsubscribe } from '../client';
import { toSdkError, type PrivcommSdkError } from '../errors';
import type { ConnectionStatus } from '../types';

/** The account and connection state and its actions. */
export interface UserState {
  /** This account's user id, once registered. */
  userId: string | undefined;
  /** The link to the relay. */
  connection: ConnectionStatus;
  /** A `register` call is under way. */
  registering: boolean;
  /** The account connected on another device and this one stopped. */
  connectedElsewhere: boolean;
  /** Peers whose identity key changed and wait for `acceptIdentity`. */
  identityChanges: string[];
  /** The last failure of an action. */
  error: PrivcommSdkError | undefined;
  /** Reads the stored user id (after opening a client). */
  load(): Promise<void>;
  /** Registers `phoneNumber`; resolves with the user id. */
  register(phoneNumber: string): Promise<string>;
  /** Connects; resolves once online. */
  connect(): Promise<void>;
  /** Disconnects. */
  disconnect(): Promise<void>;
  /** Accepts a peer's new identity key (after the user compared safety numbers). */
  acceptIdentity(peer: string): Promise<void>;
}

/** A user store with the subscription that feeds it; `dispose()` stops the feed. */
export interface UserStore extends StoreApi<UserState> {
  dispose: Unsubscribe;
}

/** Creates the user store for `client`. */
export function createUserStore(client: Privcomm): UserStore {
  const store = createStore<UserState>()((set, get) => {
    const attempt = async <T>(action: () => Promise<T>): Promise<T> => {
      try {
        const result = await action();
        set({ error: undefined });
        return result;
      } catch (e) {
        const error = toSdkError(e);
        set({ error });
        throw error;
      }
    };
    return {
      userId: undefined,
      connection: client.connectionStatus(),
      registering: false,
      connectedElsewhere: false,
      identityChanges: [],
      error: undefined,

      async load() {
        const userId = await attempt(() => client.userId());
        set({ userId });
      },

      async register(phoneNumber) {
        set({ registering: true });
        try {
          const userId = await attempt(() => client.register(phoneNumber));
          set({ userId });
          return userId;
        } finally {
          set({ registering: false });
        }
      },

      async connect() {
        set({ connectedElsewhere: false });
        await attempt(() => client.connect());
        set({ connection: client.connectionStatus() });
      },

      async disconnect() {
        await attempt(() => client.disconnect());
        set({ connection: client.connectionStatus() });
      },

      async acceptIdentity(peer) {
        await attempt(() => client.acceptIdentity(peer));
        set({ identityChanges: get().identityChanges.filter((p) => p !== peer) });
      },
    };
  });

  const unsubscribe = client.onAny((event) => {
    switch (event.type) {
      case 'connectionChanged':
        store.setState({ connection: event.status });
        break;
      case 'connectedElsewhere':
        store.setState({ connectedElsewhere: true });
        break;
      case 'identityChanged':
        store.setState((state) =>
          state.identityChanges.includes(event.peer)
            ? state
            : { identityChanges: [...state.identityChanges, event.peer] },
        );
        break;
      default:
        break;
    }
  });

  return Object.assign(store, { dispose: unsubscribe });
}
