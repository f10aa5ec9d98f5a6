import { afterEach, describe, expect, it } from 'vitest';

import {
  CachedSecretStore,
  MemorySecretBackend,
  Privcomm,
  VerificationError,
  createChatStore,
  createUserStore,
  type ChatStore,
  type MessageStatus,
} from '../src/api';
import { codeFor, newDataDir, newPhoneNumber, onlineDevice, relayUrl, type Device } from './support';

const cleanups: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0)) await cleanup();
});

async function device(): Promise<Device> {
  const d = await onlineDevice();
  cleanups.push(() => d.client.shutdown().catch(() => undefined));
  return d;
}

/** Every status a message of `store` goes through, as the store shows it. */
function recordStatuses(store: ChatStore, peer: string, body: string): MessageStatus[] {
  const seen: MessageStatus[] = [];
  const unsubscribe = store.subscribe((state) => {
    const message = state.messages[peer]?.find((m) => m.body === body);
    if (message !== undefined && seen[seen.length - 1] !== message.status) seen.push(message.status);
  });
  cleanups.push(async () => unsubscribe());
  return seen;
}

describe('Zustand stores fed by the core', () => {
  it('chatStore shows a sent message as queued, then sent, then delivered', async () => {
    const alice = await device();
    const bob = await device();
    const bobId = await alice.client.resolvePeer(bob.number);

    const aliceChat = createChatStore(alice.client);
    const bobChat = createChatStore(bob.client);
    cleanups.push(async () => aliceChat.dispose());
    cleanups.push(async () => bobChat.dispose());

    const statuses = recordStatuses(aliceChat, bobId, 'optimistic hello');
    const sending = aliceChat.getState().sendText(bobId, 'optimistic hello');
    // Optimistic: shown before the core answered.
    expect(aliceChat.getState().messages[bobId]?.map((m) => [m.body, m.status])).toEqual([
      ['optimistic hello', 'queued'],
    ]);
    const id = await sending;

    await expect.poll(() => aliceChat.getState().messages[bobId]?.[0]?.status, { timeout: 30_000 }).toBe('delivered');
    expect(aliceChat.getState().messages[bobId]?.[0]?.id).toBe(id);
    // Each step shown once, in order, whatever order the core's events and the send's
    // resolution reached the store in.
    expect(statuses).toEqual(['queued', 'sent', 'delivered']);
    expect(aliceChat.getState().conversations.map((c) => c.peer)).toEqual([bobId]);

    // Bob's store received it and lists the conversation.
    await expect
      .poll(() => bobChat.getState().messages[alice.userId]?.map((m) => m.body), { timeout: 30_000 })
      .toEqual(['optimistic hello']);
    expect(bobChat.getState().conversations.map((c) => c.peer)).toEqual([alice.userId]);

    // A fresh store loads the same from the core's history.
    const reloaded = createChatStore(alice.client);
    cleanups.push(async () => reloaded.dispose());
    await reloaded.getState().loadConversations();
    await reloaded.getState().loadHistory(bobId);
    expect(reloaded.getState().messages[bobId]?.map((m) => [m.id, m.status])).toEqual([[id, 'delivered']]);
  });

  it('chatStore marks a message the core refused as failed and keeps the typed error', async () => {
    const alice = await device();
    const chat = createChatStore(alice.client);
    cleanups.push(async () => chat.dispose());
    await expect(chat.getState().sendText('not-a-uuid', 'x')).rejects.toMatchObject({ code: 'InvalidArgument' });
    expect(chat.getState().messages['not-a-uuid']?.map((m) => m.status)).toEqual(['failed']);
    expect(chat.getState().error?.code).toBe('InvalidArgument');
  });

  it('userStore follows registration and the connection', async () => {
    const alice = await device();
    const user = createUserStore(alice.client);
    cleanups.push(async () => user.dispose());
    await user.getState().load();
    expect(user.getState().userId).toBe(alice.userId);
    expect(user.getState().connection).toEqual({ kind: 'connected' });

    await user.getState().disconnect();
    expect(user.getState().connection).toEqual({ kind: 'offline' });
    await user.getState().connect();
    expect(user.getState().connection).toEqual({ kind: 'connected' });
    await expect(user.getState().requestCode('nonsense')).rejects.toMatchObject({ code: 'InvalidArgument' });
    expect(user.getState().error?.code).toBe('InvalidArgument');
    expect(user.getState().registering).toBe(false);
  });

  it('userStore registers in two steps: the code, then the account', async () => {
    const client = await Privcomm.open({
      dataDir: newDataDir(),
      serverUrl: relayUrl,
      secretStore: await CachedSecretStore.open(new MemorySecretBackend()),
    });
    cleanups.push(async () => client.shutdown());
    const user = createUserStore(client);
    cleanups.push(async () => user.dispose());
    const number = newPhoneNumber();
    await expect(user.getState().register('123456')).rejects.toMatchObject({ code: 'InvalidArgument' });

    await user.getState().requestCode(number);
    expect(user.getState().codeSentTo?.phoneNumber).toBe(number);
    const code = await codeFor(number);
    const wrong = code === '000000' ? '000001' : '000000';
    const refused = await user.getState().register(wrong).catch((e: unknown) => e);
    expect(refused).toBeInstanceOf(VerificationError);
    expect(refused).toMatchObject({ code: 'InvalidCode', kind: 'invalidInput' });
    expect(user.getState().userId).toBeUndefined();

    const userId = await user.getState().register(code);
    expect(user.getState().userId).toBe(userId);
    expect(user.getState().codeSentTo).toBeUndefined();
    expect(await client.userId()).toBe(userId);
  });
});
