// Everything of the package except the native installer: what the app uses, and what the
// Node tests load against the N-API flavour of the bindings.
export { AUDIO_FRAME_SAMPLES, deleteLocalData, Privcomm } from './client';
export type {
  CallStats,
  DroppedMessages,
  HistoryQuery,
  PrivcommOptions,
  Unsubscribe,
} from './client';
export * from './errors';
export * from './types';
export * from './stores';
export { CachedSecretStore, MemorySecretBackend, isFlushable } from './secretStore';
export type { FlushableSecretStore, SecretBackend } from './secretStore';
export type { SecretStore } from './bindings';
