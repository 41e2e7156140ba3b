// Types for fuzz.mjs (imported by test/rpc/bad-input.test.ts).
export function lcg(seed: number): () => number;
export function mulberry32(seed: number): () => number;
export function pick<T>(rnd: () => number, xs: readonly T[]): T;
export function int(rnd: () => number, lo: number, hi: number): number;
export function basicMessage(rnd: () => number): string;
export const METHODS: readonly string[];
export function hostileMessage(rnd: () => number): { kind: string; bytes: Buffer };
export function notificationFlood(rnd: () => number, n: number): Buffer;
export function idKey(id: unknown): string;
export function expectedReplies(bytes: Buffer, limits?: { maxBatch?: number; maxRequestBytes?: number }): { keys: string[]; overflow: boolean };
