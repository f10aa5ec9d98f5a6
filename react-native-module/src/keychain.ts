// The secret backend of apps: react-native-keychain, i.e. an Android Keystore AES-GCM key
// (non-exportable; the secrets are stored only encrypted under it) and the iOS Keychain
// (this device only, never synced). Import it from 'react-native-privcomm/keychain'.
import * as Keychain from 'react-native-keychain';

import type { SecretBackend } from './secretStore';
import { CachedSecretStore } from './secretStore';

/** Keychain entry (service) holding the core's secrets. */
export const DEFAULT_KEYCHAIN_SERVICE = 'org.privcomm.secrets';

/** A `SecretBackend` over react-native-keychain. */
export class KeychainBackend implements SecretBackend {
  constructor(private readonly service: string = DEFAULT_KEYCHAIN_SERVICE) {}

  async load(): Promise<Record<string, string>> {
    const entry = await Keychain.getGenericPassword({ service: this.service });
    if (entry === false) return {};
    const parsed: unknown = JSON.parse(entry.password);
    if (parsed === null || typeof parsed !== 'object') throw new Error('the keychain entry is corrupt');
    return parsed as Record<string, string>;
  }

  async save(secrets: Record<string, string>): Promise<void> {
    const saved = await Keychain.setGenericPassword('privcomm', JSON.stringify(secrets), {
      service: this.service,
      accessible: Keychain.ACCESSIBLE.AFTER_FIRST_UNLOCK_THIS_DEVICE_ONLY,
      storage: Keychain.STORAGE_TYPE.AES_GCM_NO_AUTH,
      cloudSync: false,
    });
    if (saved === false) throw new Error('the keychain refused the secret');
  }
}

/** The app's secret store: the keychain, read once, written through. */
export function openKeychainSecretStore(service?: string): Promise<CachedSecretStore> {
  return CachedSecretStore.open(new KeychainBackend(service));
}
