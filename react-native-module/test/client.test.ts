import { afterEach, describe, expect, it } from 'vitest';

import {
  AccountError,
  CachedSecretStore,
  InvalidArgumentError,
  KeyStoreError,
  MemorySecretBackend,
  NetworkError,
  Privcomm,
  PrivcommSdkError,
  RelayError,
  UnknownPeerError,
  type ChatMessage,
} from '../src/api';
import { newDataDir, newPhoneNumber, onlineDevice, registerNumber, relayUrl, type Device } from './support';

const opened: Device[] = [];
async function device(): Promise<Device> {
  const d = await onlineDevice();
  opened.push(d);
  return d;
}

afterEach(async () => {
  for (const d of opened.splice(0)) await d.client.shutdown().catch(() => undefined);
});

describe('Privcomm client over the real core and relay', () => {
  it('exchanges messages between two clients, with delivery', async () => {
    const alice = await device();
    const bob = await device();
    expect(alice.client.connectionStatus()).toEqual({ kind: 'connected' });

    const bobId = await alice.client.resolvePeer(bob.number);
    expect(bobId).toBe(bob.userId);
    const id = await alice.client.sendText(bobId, 'hello from TypeScript');

    const received = await bob.events.next((e) => (e.type === 'messageReceived' ? e.message : undefined));
    expect(received).toMatchObject<Partial<ChatMessage>>({
      peer: alice.userId,
      outgoing: false,
      body: 'hello from TypeScript',
      status: 'received',
    });
    await alice.events.next((e) =>
      e.type === 'messageStatusChanged' && e.id === id && e.status === 'delivered' ? true : undefined,
    );

    await bob.client.sendText(alice.userId, 'hello back');
    const reply = await alice.events.next((e) => (e.type === 'messageReceived' ? e.message : undefined));
    expect(reply.body).toBe('hello back');

    const history = await alice.client.history(bobId);
    expect(history.map((m) => m.body)).toEqual(['hello back', 'hello from TypeScript']);
    expect((await alice.client.message(id))?.status).toBe('delivered');
    expect((await alice.client.conversations()).map((c) => c.peer)).toEqual([bobId]);
    const older = await alice.client.history(bobId, { before: history[0], limit: 10 });
    expect(older.map((m) => m.body)).toEqual(['hello from TypeScript']);
  });

  it('unsubscribes cleanly', async () => {
    const alice = await device();
    const bob = await device();
    const bobId = await alice.client.resolvePeer(bob.number);

    const heard: string[] = [];
    const stop = bob.client.on('messageReceived', (e) => heard.push(e.message.body));
    await alice.client.sendText(bobId, 'one');
    await bob.events.next((e) => (e.type === 'messageReceived' && e.message.body === 'one' ? true : undefined));
    expect(heard).toEqual(['one']);

    stop();
    stop(); // twice is harmless
    await alice.client.sendText(bobId, 'two');
    await bob.events.next((e) => (e.type === 'messageReceived' && e.message.body === 'two' ? true : undefined));
    expect(heard).toEqual(['one']);

    // With every handler gone the core's listener stops; a new one starts it again.
    bob.events.stop();
    const again: string[] = [];
    const stopAgain = bob.client.on('messageReceived', (e) => again.push(e.message.body));
    await alice.client.sendText(bobId, 'three');
    await expect.poll(() => again, { timeout: 30_000 }).toEqual(['three']);
    stopAgain();
  });

  it('a handler that throws does not stop the others', async () => {
    const alice = await device();
    const bob = await device();
    const bobId = await alice.client.resolvePeer(bob.number);
    const stop = bob.client.on('messageReceived', () => {
      throw new Error('handler bug');
    });
    await alice.client.sendText(bobId, 'still arrives');
    const message = await bob.events.next((e) => (e.type === 'messageReceived' ? e.message : undefined));
    expect(message.body).toBe('still arrives');
    stop();
  });

  it('throws typed errors', async () => {
    const alice = await device();
    const client = alice.client;

    await expect(client.sendText('not-a-uuid', 'hi')).rejects.toBeInstanceOf(InvalidArgumentError);
    await expect(client.sendText(crypto.randomUUID(), '')).rejects.toMatchObject({ code: 'InvalidArgument' });
    await expect(client.requestVerification('555-1234')).rejects.toBeInstanceOf(InvalidArgumentError);
    await expect(client.startCall(crypto.randomUUID())).rejects.toBeInstanceOf(UnknownPeerError);
    expect(() => client.hangUp(crypto.randomUUID())).toThrow(expect.objectContaining({ code: 'NoSuchCall' }));

    const notFound = await client.resolvePeer(newPhoneNumber()).catch((e: unknown) => e);
    expect(notFound).toBeInstanceOf(RelayError);
    expect(notFound).toBeInstanceOf(PrivcommSdkError);
    expect(notFound).toBeInstanceOf(Error);
    expect(notFound).toMatchObject({ status: 404, relayCode: 'not_found', code: 'Relay' });

    await client.disconnect();
    await expect(client.startCall(crypto.randomUUID())).rejects.toMatchObject({ code: 'NotConnected' });

    const fresh = await Privcomm.open({
      dataDir: newDataDir(),
      serverUrl: relayUrl,
      secretStore: await CachedSecretStore.open(new MemorySecretBackend()),
    });
    await expect(fresh.connect()).rejects.toBeInstanceOf(AccountError);
    await fresh.shutdown();

    const offline = await Privcomm.open({
      dataDir: newDataDir(),
      serverUrl: 'http://127.0.0.1:1',
      secretStore: await CachedSecretStore.open(new MemorySecretBackend()),
    });
    await expect(offline.requestVerification(newPhoneNumber())).rejects.toBeInstanceOf(NetworkError);
    await offline.shutdown();
  });

  it('reopens with its secret store, and reports a lost one as a key store error', async () => {
    const backend = new MemorySecretBackend();
    const dataDir = newDataDir();
    const first = await Privcomm.open({ dataDir, serverUrl: relayUrl, secretStore: await CachedSecretStore.open(backend) });
    const userId = await registerNumber(first, newPhoneNumber());
    await first.shutdown();

    const again = await Privcomm.open({ dataDir, serverUrl: relayUrl, secretStore: await CachedSecretStore.open(backend) });
    expect(await again.userId()).toBe(userId);
    await again.shutdown();

    const lost = await Privcomm.open({
      dataDir,
      serverUrl: relayUrl,
      secretStore: await CachedSecretStore.open(new MemorySecretBackend()),
    }).catch((e: unknown) => e);
    expect(lost).toBeInstanceOf(KeyStoreError);
    expect(lost).toMatchObject({ code: 'MissingKey', retryable: false });
  });
});
