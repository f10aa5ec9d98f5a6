import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import {
  CachedSecretStore,
  MemorySecretBackend,
  Privcomm,
  type PrivcommEvent,
  type SecretStore,
  type Unsubscribe,
} from '../src/api';

/** The relay started by bindings/tests/react_native.rs. */
export const relayUrl: string = (() => {
  const url = process.env.PRIVCOMM_RELAY_URL;
  if (url === undefined || url === '') throw new Error('PRIVCOMM_RELAY_URL is not set');
  return url;
})();

/** The relay's code inbox (bindings/tests/react_native.rs): where its texts arrive. */
export const codesUrl: string = (() => {
  const url = process.env.PRIVCOMM_CODES_URL;
  if (url === undefined || url === '') throw new Error('PRIVCOMM_CODES_URL is not set');
  return url;
})();

/** The code the relay texted to `number` (taken from its inbox, waiting up to 20 s). */
export async function codeFor(number: string): Promise<string> {
  const deadline = Date.now() + 20_000;
  for (;;) {
    const response = await fetch(`${codesUrl}/codes/${encodeURIComponent(number)}`);
    if (response.ok) return (await response.text()).trim();
    if (Date.now() > deadline) throw new Error(`no code arrived for ${number}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

/** Verifies `number` and registers `client` with it. */
export async function registerNumber(client: Privcomm, number: string): Promise<string> {
  await client.requestVerification(number);
  return client.register(number, await codeFor(number));
}

export function newPhoneNumber(): string {
  return `+1555${Math.floor(1_000_000 + Math.random() * 8_999_999)}`;
}

export function newDataDir(): string {
  return mkdtempSync(join(tmpdir(), 'privcomm-ts-'));
}

/** Collects events and waits for the ones a test expects. */
export class Events {
  readonly seen: PrivcommEvent[] = [];
  private waiters: Array<() => void> = [];
  readonly stop: Unsubscribe;

  constructor(client: Privcomm) {
    this.stop = client.onAny((event) => {
      this.seen.push(event);
      for (const wake of this.waiters.splice(0)) wake();
    });
  }

  /** Resolves with the first event (seen or to come) that `pick` maps to a value. */
  async next<T>(pick: (event: PrivcommEvent) => T | undefined, timeoutMs = 30_000): Promise<T> {
    const deadline = Date.now() + timeoutMs;
    let from = 0;
    for (;;) {
      for (; from < this.seen.length; from++) {
        const event = this.seen[from];
        const value = event === undefined ? undefined : pick(event);
        if (value !== undefined) {
          this.seen.splice(from, 1);
          return value;
        }
      }
      const left = deadline - Date.now();
      if (left <= 0) throw new Error('timed out waiting for an event');
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.waiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
  }
}

export interface Device {
  client: Privcomm;
  events: Events;
  secrets: SecretStore;
  dataDir: string;
  number: string;
  userId: string;
}

/** Opens a client with an in-memory secret backend, registers and connects it. */
export async function onlineDevice(): Promise<Device> {
  const dataDir = newDataDir();
  const secrets = await CachedSecretStore.open(new MemorySecretBackend());
  const client = await Privcomm.open({
    dataDir,
    serverUrl: relayUrl,
    secretStore: secrets,
    call: { bindAddrs: ['127.0.0.1:0'] },
  });
  const events = new Events(client);
  const number = newPhoneNumber();
  const userId = await registerNumber(client, number);
  await client.connect();
  return { client, events, secrets, dataDir, number, userId };
}
