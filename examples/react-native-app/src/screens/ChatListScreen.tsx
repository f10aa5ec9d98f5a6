import { useEffect, useState } from 'react';
import { Button, FlatList, Pressable, Text, TextInput, View } from 'react-native';
import { useStore } from 'zustand';

import { useSession } from '../session';

/** Conversations, most recent first, and a field to start a new one by phone number. */
export function ChatListScreen({ onOpen }: { onOpen: (peer: string) => void }) {
  const { client, chat } = useSession();
  const conversations = useStore(chat, (s) => s.conversations);
  const [number, setNumber] = useState('');
  const [error, setError] = useState<string | undefined>();

  useEffect(() => {
    void chat.getState().loadConversations();
  }, [chat]);

  const start = async () => {
    try {
      onOpen(await client.resolvePeer(number));
      setError(undefined);
    } catch (e) {
      setError(e instanceof Error ? e.message : String(e));
    }
  };

  return (
    <View style={{ flex: 1, padding: 16 }}>
      <View style={{ flexDirection: 'row', gap: 8 }}>
        <TextInput
          style={{ flex: 1, borderWidth: 1, padding: 8 }}
          placeholder="+4915112345678"
          keyboardType="phone-pad"
          value={number}
          onChangeText={setNumber}
        />
        <Button title="Chat" onPress={() => void start()} />
      </View>
      {error !== undefined && <Text style={{ color: 'red' }}>{error}</Text>}
      <FlatList
        data={conversations}
        keyExtractor={(c) => c.peer}
        renderItem={({ item }) => (
          <Pressable onPress={() => onOpen(item.peer)} style={{ paddingVertical: 12 }}>
            <Text>{item.peer}</Text>
            <Text style={{ color: 'gray' }}>{new Date(item.lastActivity).toLocaleString()}</Text>
          </Pressable>
        )}
      />
    </View>
  );
}
