// The generated API (src/generated/privcomm.ts), in one place so that the Node tests can
// swap in the N-API flavour of the same code (vitest.config.ts aliases this import).
export * from './generated/privcomm';
