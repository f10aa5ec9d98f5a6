import { afterEach, describe, expect, it } from 'vitest';

import { AUDIO_FRAME_SAMPLES, type CallInfo } from '../src/api';
import { onlineDevice, type Device } from './support';

const opened: Device[] = [];
afterEach(async () => {
  for (const d of opened.splice(0)) await d.client.shutdown().catch(() => undefined);
});

function tone(frequency: number, offset: number): Int16Array {
  const frame = new Int16Array(AUDIO_FRAME_SAMPLES);
  for (let i = 0; i < frame.length; i++) {
    frame[i] = Math.round(8000 * Math.sin((2 * Math.PI * frequency * (offset + i)) / 48_000));
  }
  return frame;
}

describe('voice calls through the TypeScript API', () => {
  it('rings, connects, carries audio and hangs up', async () => {
    const alice = await onlineDevice();
    const bob = await onlineDevice();
    opened.push(alice, bob);
    const bobId = await alice.client.resolvePeer(bob.number);
    await alice.client.sendText(bobId, 'calling you');
    await bob.events.next((e) => (e.type === 'messageReceived' ? true : undefined));

    let loudFrames = 0;
    const stopAudio = bob.client.onAudio((_callId, samples) => {
      if (samples.length === AUDIO_FRAME_SAMPLES && samples.some((s) => Math.abs(s) > 2000)) loudFrames++;
    });

    const callId = await alice.client.startCall(bobId);
    const ringing = await bob.events.next((e) =>
      e.type === 'callChanged' && e.status.kind === 'incomingRinging' ? e : undefined,
    );
    expect(ringing).toMatchObject<Partial<CallInfo>>({ callId, peer: alice.userId, direction: 'incoming' });
    bob.client.acceptCall(callId);
    for (const d of [alice, bob]) {
      await d.events.next((e) => (e.type === 'callChanged' && e.status.kind === 'connected' ? true : undefined));
    }
    expect(alice.client.currentCall()?.status).toEqual({ kind: 'connected' });

    // One second of 440 Hz from Alice's "microphone", paced like a real one.
    for (let i = 0; i < 50; i++) {
      alice.client.pushAudioFrame(callId, tone(440, i * AUDIO_FRAME_SAMPLES));
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    await expect.poll(() => loudFrames, { timeout: 10_000 }).toBeGreaterThan(10);
    expect((await alice.client.callStats(callId)).packetsSent).toBeGreaterThan(0);
    stopAudio();

    alice.client.hangUp(callId);
    for (const d of [alice, bob]) {
      const ended = await d.events.next((e) =>
        e.type === 'callChanged' && e.status.kind === 'ended' ? e.status : undefined,
      );
      expect(ended).toEqual({ kind: 'ended', reason: 'hungUp' });
    }
    expect(alice.client.currentCall()).toBeUndefined();
  });
});
