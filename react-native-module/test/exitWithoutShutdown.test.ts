// The last thing this file's process does is exit with two clients still open: listeners
// subscribed, messages in flight, no `shutdown()`. Vitest runs each file in its own
// process (pool 'forks'), so a process that aborts at exit (SIGABRT, SIGSEGV) fails the
// run. Also the block list and dropped counts through the TypeScript API.
import { describe, expect, it } from 'vitest';

import { PeerBlockedError } from '../src/api';
import { onlineDevice } from './support';

describe('a process that exits without shutdown', () => {
  it('blocks a peer, then leaves both clients open', async () => {
    const alice = await onlineDevice();
    const bob = await onlineDevice();
    const bobId = await alice.client.resolvePeer(bob.number);
    const aliceId = await bob.client.resolvePeer(alice.number);

    expect(await bob.client.blockPeer(aliceId)).toBe(true);
    expect(await bob.client.blockedPeers()).toEqual([aliceId]);
    const refused = await bob.client.sendText(aliceId, 'hi').catch((e: unknown) => e);
    expect(refused).toBeInstanceOf(PeerBlockedError);
    expect((refused as PeerBlockedError).kind).toBe('peer');
    expect((refused as PeerBlockedError).retryable).toBe(false);
    for (let i = 0; i < 3; i++) await alice.client.sendText(bobId, `spam ${i}`);
    const deadline = Date.now() + 30_000;
    while ((await bob.client.droppedMessages()).blocked < 3) {
      if (Date.now() > deadline) throw new Error('blocked messages were not dropped');
      await new Promise((r) => setTimeout(r, 20));
    }
    expect(await bob.client.unblockPeer(aliceId)).toBe(true);

    const first = await alice.client.sendText(bobId, 'first');
    const received = await bob.events.next((e) =>
      e.type === 'messageReceived' && e.message.id === first ? e.message : undefined,
    );
    expect(received.body).toBe('first');
    // More on the way while the process ends; no shutdown().
    for (let i = 0; i < 30; i++) void alice.client.sendText(bobId, `in flight ${i}`);
  });
});
