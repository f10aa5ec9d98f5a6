import { useEffect, useState } from 'react';
import { Button, SafeAreaView, Text, TextInput, View } from 'react-native';
import type { CallInfo } from 'react-native-privcomm';
import { useStore } from 'zustand';

import { CallScreen } from './src/screens/CallScreen';
import { ChatListScreen } from './src/screens/ChatListScreen';
import { ChatScreen } from './src/screens/ChatScreen';
import { openSession, SessionContext, useSession, type Session } from './src/session';

// The app's private files directory (react-native-fs or similar would give the real one).
const DATA_DIR = '/data/data/org.privcomm.example/no_backup/privcomm';

type Route = { name: 'list' } | { name: 'chat'; peer: string } | { name: 'call'; peer: string; incoming?: CallInfo };

function Registration() {
  const { user } = useSession();
  const registering = useStore(user, (s) => s.registering);
  const codeSentTo = useStore(user, (s) => s.codeSentTo);
  const pinRequired = useStore(user, (s) => s.pinRequired);
  const error = useStore(user, (s) => s.error);
  const [number, setNumber] = useState('');
  const [code, setCode] = useState('');
  const [pin, setPin] = useState('');
  if (codeSentTo === undefined) {
    return (
      <View style={{ padding: 16, gap: 8 }}>
        <Text>Your phone number</Text>
        <TextInput style={{ borderWidth: 1, padding: 8 }} keyboardType="phone-pad" value={number} onChangeText={setNumber} />
        <Button
          title={registering ? 'Sending a code…' : 'Text me a code'}
          disabled={registering}
          onPress={() => void user.getState().requestCode(number).catch(() => undefined)}
        />
        {error !== undefined && <Text style={{ color: 'red' }}>{error.message}</Text>}
      </View>
    );
  }
  return (
    <View style={{ padding: 16, gap: 8 }}>
      <Text>The code texted to {codeSentTo.phoneNumber}</Text>
      <TextInput style={{ borderWidth: 1, padding: 8 }} keyboardType="number-pad" value={code} onChangeText={setCode} />
      {pinRequired && (
        <>
          <Text>This number has a registration lock: its PIN</Text>
          <TextInput style={{ borderWidth: 1, padding: 8 }} secureTextEntry value={pin} onChangeText={setPin} />
        </>
      )}
      <Button
        title={registering ? 'Registering…' : 'Register'}
        disabled={registering}
        onPress={() =>
          void user
            .getState()
            .register(code, pinRequired ? pin : undefined)
            .then(() => user.getState().connect())
            .catch(() => undefined)
        }
      />
      {error !== undefined && <Text style={{ color: 'red' }}>{error.message}</Text>}
    </View>
  );
}

function Main() {
  const { client, user } = useSession();
  const userId = useStore(user, (s) => s.userId);
  const connection = useStore(user, (s) => s.connection);
  const [route, setRoute] = useState<Route>({ name: 'list' });

  useEffect(() => {
    if (userId !== undefined) void user.getState().connect().catch(() => undefined);
  }, [user, userId]);

  // An incoming call takes over the screen.
  useEffect(
    () =>
      client.on('callChanged', (call) => {
        if (call.status.kind === 'incomingRinging') setRoute({ name: 'call', peer: call.peer, incoming: call });
      }),
    [client],
  );

  if (userId === undefined) return <Registration />;
  return (
    <View style={{ flex: 1 }}>
      <Text style={{ padding: 8 }}>{connection.kind}</Text>
      {route.name === 'list' && <ChatListScreen onOpen={(peer) => setRoute({ name: 'chat', peer })} />}
      {route.name === 'chat' && (
        <ChatScreen
          peer={route.peer}
          onBack={() => setRoute({ name: 'list' })}
          onCall={() => setRoute({ name: 'call', peer: route.peer })}
        />
      )}
      {route.name === 'call' && (
        <CallScreen
          peer={route.peer}
          {...(route.incoming !== undefined ? { incoming: route.incoming } : {})}
          onDone={() => setRoute({ name: 'chat', peer: route.peer })}
        />
      )}
    </View>
  );
}

export default function App() {
  const [session, setSession] = useState<Session | undefined>();
  const [error, setError] = useState<string | undefined>();
  useEffect(() => {
    openSession(DATA_DIR).then(setSession, (e: unknown) => setError(e instanceof Error ? e.message : String(e)));
  }, []);
  return (
    <SafeAreaView style={{ flex: 1 }}>
      {session === undefined ? (
        <Text style={{ padding: 16 }}>{error ?? 'Opening…'}</Text>
      ) : (
        <SessionContext.Provider value={session}>
          <Main />
        </SessionContext.Provider>
      )}
    </SafeAreaView>
  );
}
