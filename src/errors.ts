/** The stable error codes a client sees in JSON-RPC `error.data.code`. */
export const ERROR_CODES = [
  'NOT_FOUND',
  'CONFLICT',
  'INVALID_IMAGE',
  'INCOMPATIBLE',
  'LIMIT',
  'SYSTEMD',
  'UNAVAILABLE',
  'FORBIDDEN',
  /** An image without a valid signature by a trusted key (SPEC 13). */
  'UNTRUSTED',
  'INTERNAL',
] as const;
export type ErrorCode = (typeof ERROR_CODES)[number];

/** The one error family of smd: a stable code, a human message and optional details. */
export class SmError extends Error {
  readonly code: ErrorCode;
  readonly details?: Record<string, unknown>;

  constructor(code: ErrorCode, message: string, details?: Record<string, unknown>, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'SmError';
    this.code = code;
    if (details !== undefined) this.details = details;
  }
}

export function isSmError(err: unknown, code?: ErrorCode): err is SmError {
  return err instanceof SmError && (code === undefined || err.code === code);
}

/** Error codes of a full disk: from the file system, or from SQLite. */
const FULL_DISK = new Set(['ENOSPC', 'EDQUOT', 'SQLITE_FULL']);

/** Wraps anything thrown into an SmError, keeping SmErrors as they are; a full disk is LIMIT. */
export function toSmError(err: unknown, fallback: ErrorCode = 'INTERNAL'): SmError {
  if (err instanceof SmError) return err;
  const message = err instanceof Error ? err.message : String(err);
  const code = (err as { code?: unknown } | null)?.code;
  if (typeof code === 'string' && FULL_DISK.has(code)) return new SmError('LIMIT', `no space left: ${message}`, { errno: code }, { cause: err });
  return new SmError(fallback, message, undefined, { cause: err });
}

export const notFound = (what: string, details?: Record<string, unknown>) => new SmError('NOT_FOUND', `${what} not found`, details);
