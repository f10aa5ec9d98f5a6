// The seed's userStore: who this device is and how its link to the relay stands.
import { createStore, type StoreApi } from 'zustand/vanilla';

import type { Privcomm, Unsubscribe } from '../client';
import {
  InvalidArgumentError,
  RegistrationLockedError,
  toSdkError,
  type PrivcommSdkError,
} from '../errors';
import type { ConnectionStatus } from '../types';

/** The account and connection state and its actions. */
export interface UserState {
  /** This account's user id, once registered. */
  userId: string | undefined;
  /** The link to the relay. */
  connection: ConnectionStatus;
  /** A `requestCode` or `register` call is under way. */
  registering: boolean;
  /** The number a verification code was texted to, and until when (ms) it is valid. */
  codeSentTo: { phoneNumber: string; expiresAt: number } | undefined;
  /** The number's account has a registration lock: `register` again with its PIN. */
  pinRequired: boolean;
  /** The account connected on another device and this one stopped. */
  connectedElsewhere: boolean;
  /** Peers whose identity key changed and wait for `acceptIdentity`. */
  identityChanges: string[];
  /** The last failure of an action. */
  error: PrivcommSdkError | undefined;
  /** Reads the stored user id (after opening a client). */
  load(): Promise<void>;
  /** Step 1: has a verification code texted to `phoneNumber`. */
  requestCode(phoneNumber: string): Promise<void>;
  /**
   * Step 2: registers the number of `requestCode` with the `code` it received (and `pin`
   * when `pinRequired`); resolves with the user id.
   */
  register(code: string, pin?: string): Promise<string>;
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
      codeSentTo: undefined,
      pinRequired: false,
      connectedElsewhere: false,
      identityChanges: [],
      error: undefined,

      async load() {
        const userId = await attempt(() => client.userId());
        set({ userId });
      },

      async requestCode(phoneNumber) {
        set({ registering: true });
        try {
          const validSecs = await attempt(() => client.requestVerification(phoneNumber));
          set({
            codeSentTo: { phoneNumber, expiresAt: Date.now() + validSecs * 1000 },
            pinRequired: false,
          });
        } finally {
          set({ registering: false });
        }
      },

      async register(code, pin) {
        const sent = get().codeSentTo;
        if (sent === undefined) {
          const error = new InvalidArgumentError(
            'InvalidArgument',
            'InvalidArgument: request a code first (requestCode)',
          );
          error.kind = 'invalidInput';
          set({ error });
          throw error;
        }
        set({ registering: true });
        try {
          const userId = await attempt(() => client.register(sent.phoneNumber, code, pin));
          set({ userId, codeSentTo: undefined, pinRequired: false });
          return userId;
        } catch (e) {
          if (e instanceof RegistrationLockedError) set({ pinRequired: true });
          throw e;
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
