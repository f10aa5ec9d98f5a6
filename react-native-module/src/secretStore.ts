// Secret stores for the core on the JS side.
//
// The core asks its `SecretStore` synchronously (from a worker thread, while the JS thread
// waits on `Privcomm.open`), but platform keystores answer asynchronously. So secrets are
// read once into memory before opening (`CachedSecretStore.open`), answered from there,
// and written through to the backend in order; `Privcomm.open` waits for those writes
// (`flush`) before it returns, so nothing reaches the relay before the secret is durable.
import type { SecretStore } from './bindings';
import { SecretStoreError } from './bindings';

/** Where the secrets are kept for good: the platform keystore, or anything async. */
export interface SecretBackend {
  /** Every stored secret, by name, base64-encoded. */
  load(): Promise<Record<string, string>>;
  /** Replaces the stored secrets with `secrets`. */
  save(secrets: Record<string, string>): Promise<void>;
}

/** A store that can wait until its writes are durable. */
export interface FlushableSecretStore extends SecretStore {
  /** Resolves once every write so far is saved; rejects with the first failure. */
  flush(): Promise<void>;
}

export function isFlushable(store: SecretStore): store is FlushableSecretStore {
  return typeof (store as Partial<FlushableSecretStore>).flush === 'function';
}

function toBase64(bytes: ArrayBuffer): string {
  let binary = '';
  for (const byte of new Uint8Array(bytes)) binary += String.fromCharCode(byte);
  return btoa(binary);
}

function fromBase64(text: string): ArrayBuffer {
  const binary = atob(text);
  const bytes = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
  return bytes.buffer;
}

/** A `SecretStore` answered from memory and written through to a `SecretBackend`. */
export class CachedSecretStore implements FlushableSecretStore {
  private writes: Promise<void> = Promise.resolve();
  private failure: unknown = undefined;

  private constructor(
    private readonly backend: SecretBackend,
    private readonly secrets: Map<string, string>,
  ) {}

  /** Reads the backend's secrets; a backend that cannot be read rejects here. */
  static async open(backend: SecretBackend): Promise<CachedSecretStore> {
    const stored = await backend.load();
    return new CachedSecretStore(backend, new Map(Object.entries(stored)));
  }

  get(name: string): ArrayBuffer | undefined {
    this.throwIfFailed();
    const value = this.secrets.get(name);
    return value === undefined ? undefined : fromBase64(value);
  }

  set(name: string, secret: ArrayBuffer): void {
    this.throwIfFailed();
    this.secrets.set(name, toBase64(secret));
    this.persist();
  }

  delete_(name: string): void {
    this.throwIfFailed();
    if (this.secrets.delete(name)) this.persist();
  }

  async flush(): Promise<void> {
    await this.writes;
    if (this.failure !== undefined) throw this.failure;
  }

  private persist(): void {
    const snapshot = Object.fromEntries(this.secrets);
    this.writes = this.writes.then(() =>
      this.backend.save(snapshot).catch((e: unknown) => {
        this.failure ??= e;
      }),
    );
  }

  private throwIfFailed(): void {
    if (this.failure !== undefined) {
      throw new SecretStoreError.Unavailable({ detail: 'an earlier write to the keystore failed' });
    }
  }
}

/** Secrets in memory only: for tests and throwaway sessions. */
export class MemorySecretBackend implements SecretBackend {
  private stored: Record<string, string> = {};

  async load(): Promise<Record<string, string>> {
    return { ...this.stored };
  }

  async save(secrets: Record<string, string>): Promise<void> {
    this.stored = { ...secrets };
  }
}
