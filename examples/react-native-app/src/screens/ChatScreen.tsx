import { useEffect, useState } from 'react';
import { Button, FlatList, Text, TextInput, View } from 'react-native';
import type { ChatMessage, MessageStatus } from 'react-native-privcomm';
import { useStore } from 'zustand';

import { useSession } from '../session';

const EMPTY: ChatMessage[] = [];

const marks: Record<MessageStatus, string> = {
  queued: '🕓',
  sent: '✓',
  delivered: '✓✓',
  received: '',
  failed: '⚠',
};

/** One conversation: messages with their delivery marks, and a composer. */
export function ChatScreen({ peer, onCall, onBack }: { peer: string; onCall: () => void; onBack: () => void }) {
  const { chat } = useSession();
  const messages = useStore(chat, (s) => s.messages[peer] ?? EMPTY);
  const [text, setText] = useState('');

  useEffect(() => {
    void chat.getState().loadHistory(peer);
  }, [chat, peer]);

  const send = () => {
    const body = text.trim();
    if (body === '') return;
    setText('');
    // Optimistic: the message shows as queued at once; failures show as ⚠.
    void chat.getState().sendText(peer, body).catch(() => undefined);
  };

  return (
    <View style={{ flex: 1, padding: 16 }}>
      <View style={{ flexDirection: 'row', justifyContent: 'space-between' }}>
        <Button title="Back" onPress={onBack} />
        <Button title="Call" onPress={onCall} />
      </View>
      <FlatList
        data={messages}
        keyExtractor={(m) => m.id}
        onEndReached={() => void chat.getState().loadOlder(peer)}
        renderItem={({ item }) => (
          <Text style={{ alignSelf: item.outgoing ? 'flex-end' : 'flex-start', paddingVertical: 4 }}>
            {item.body} {marks[item.status]}
          </Text>
        )}
      />
      <View style={{ flexDirection: 'row', gap: 8 }}>
        <TextInput style={{ flex: 1, borderWidth: 1, padding: 8 }} value={text} onChangeText={setText} />
        <Button title="Send" onPress={send} />
      </View>
    </View>
  );
}
