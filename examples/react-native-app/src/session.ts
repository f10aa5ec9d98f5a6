// One client and its stores for the whole app, made once at start.
import { createContext, useContext } from 'react';
import {
  createChatStore,
  createUserStore,
  Privcomm,
  type ChatStore,
  type UserStore,
} from 'react-native-privcomm';
import { openKeychainSecretStore } from 'react-native-privcomm/keychain';

import { RELAY_URL } from './config';

export interface Session {
  client: Privcomm;
  user: UserStore;
  chat: ChatStore;
}

/** Opens the account in `dataDir` with its key in the Android Keystore (via the keychain). */
export async function openSession(dataDir: string): Promise<Session> {
  const secretStore = await openKeychainSecretStore();
  const client = await Privcomm.open({ dataDir, serverUrl: RELAY_URL, secretStore });
  const user = createUserStore(client);
  const chat = createChatStore(client);
  await user.getState().load();
  return { client, user, chat };
}

export const SessionContext = createContext<Session | undefined>(undefined);

export function useSession(): Session {
  const session = useContext(SessionContext);
  if (session === undefined) throw new Error('useSession outside SessionContext');
  return session;
}
