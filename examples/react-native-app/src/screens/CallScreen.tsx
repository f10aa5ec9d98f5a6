import { useEffect, useState } from 'react';
import { Button, Text, View } from 'react-native';
import type { CallInfo } from 'react-native-privcomm';

import { useSession } from '../session';

/**
 * A call with `peer`: places it (or shows the incoming one), with mute and hang-up.
 * Audio I/O is the app's: feed microphone frames to `client.pushAudioFrame` and play
 * `client.onAudio` frames with an audio library of your choice (see README).
 */
export function CallScreen({ peer, incoming, onDone }: { peer: string; incoming?: CallInfo; onDone: () => void }) {
  const { client } = useSession();
  const [call, setCall] = useState<CallInfo | undefined>(incoming);
  const [muted, setMuted] = useState(false);
  const [error, setError] = useState<string | undefined>();

  useEffect(() => {
    const stop = client.on('callChanged', (event) => {
      if (event.peer === peer) setCall(event);
    });
    if (incoming === undefined) {
      client.startCall(peer).catch((e: unknown) => setError(e instanceof Error ? e.message : String(e)));
    }
    return stop;
  }, [client, peer, incoming]);

  const status = call?.status;
  const ended = status?.kind === 'ended';
  return (
    <View style={{ flex: 1, padding: 16, gap: 12 }}>
      <Text>{peer}</Text>
      <Text>{status === undefined ? 'calling…' : status.kind === 'ended' ? `ended: ${status.reason}` : status.kind}</Text>
      {error !== undefined && <Text style={{ color: 'red' }}>{error}</Text>}
      {call !== undefined && status?.kind === 'incomingRinging' && (
        <View style={{ flexDirection: 'row', gap: 8 }}>
          <Button title="Accept" onPress={() => client.acceptCall(call.callId)} />
          <Button title="Decline" onPress={() => client.declineCall(call.callId)} />
        </View>
      )}
      {call !== undefined && !ended && (
        <View style={{ flexDirection: 'row', gap: 8 }}>
          <Button
            title={muted ? 'Unmute' : 'Mute'}
            onPress={() => {
              client.setMuted(call.callId, !muted);
              setMuted(!muted);
            }}
          />
          <Button title="Hang up" onPress={() => client.hangUp(call.callId)} />
        </View>
      )}
      {(ended || error !== undefined) && <Button title="Close" onPress={onDone} />}
    </View>
  );
}
