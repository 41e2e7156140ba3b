/**
 * JSON-RPC 2.0 wire types and error construction.
 *
 * We dispatch requests with this small module instead of a library: the `json-rpc-2.0` package
 * (1.8.1) answers a batch whose only reply is one response with a bare object instead of an
 * array, and throws on `null` batch members, both violations of the specification.
 */
import { SmError, type ErrorCode } from '../errors.js';

export type JsonRpcId = string | number | null;

export const RPC = {
  PARSE_ERROR: -32700,
  INVALID_REQUEST: -32600,
  METHOD_NOT_FOUND: -32601,
  INVALID_PARAMS: -32602,
  INTERNAL_ERROR: -32603,
  APPLICATION_ERROR: -32000,
} as const;

export interface JsonRpcErrorObject {
  code: number;
  message: string;
  data?: unknown;
}

export interface JsonRpcResponse {
  jsonrpc: '2.0';
  id: JsonRpcId;
  result?: unknown;
  error?: JsonRpcErrorObject;
}

export interface JsonRpcRequest {
  jsonrpc: '2.0';
  method: string;
  params?: unknown;
  id?: JsonRpcId;
}

/** A protocol-level failure (parse, invalid request, unknown method, invalid params). */
export class RpcProtocolError extends Error {
  constructor(
    readonly code: number,
    message: string,
    readonly data?: unknown,
  ) {
    super(message);
    this.name = 'RpcProtocolError';
  }
}

export function errorResponse(id: JsonRpcId, error: JsonRpcErrorObject): JsonRpcResponse {
  return { jsonrpc: '2.0', id, error };
}

/** The one place where errors become JSON-RPC error objects. */
export function toErrorObject(err: unknown): JsonRpcErrorObject {
  if (err instanceof RpcProtocolError) return err.data === undefined ? { code: err.code, message: err.message } : { code: err.code, message: err.message, data: err.data };
  if (err instanceof SmError) {
    const data: { code: ErrorCode; details?: unknown } = { code: err.code };
    if (err.details !== undefined) data.details = err.details;
    return { code: RPC.APPLICATION_ERROR, message: err.message, data };
  }
  const message = err instanceof Error ? err.message : String(err);
  return { code: RPC.APPLICATION_ERROR, message: `internal error: ${message}`, data: { code: 'INTERNAL' } };
}

export function isValidId(id: unknown): id is JsonRpcId {
  return id === null || typeof id === 'string' || (typeof id === 'number' && Number.isFinite(id));
}
