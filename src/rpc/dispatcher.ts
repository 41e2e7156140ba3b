import { isAscii } from 'node:buffer';
import type { z } from 'zod';
import { SmError } from '../errors.js';
import type { Logger } from '../log.js';
import { RPC, RpcProtocolError, errorResponse, isValidId, toErrorObject, type JsonRpcErrorObject, type JsonRpcId, type JsonRpcResponse } from './protocol.js';
import type { CallContext, MethodRegistry } from './registry.js';

export interface DispatcherOptions {
  maxBatch: number;
  /**
   * Told about every request once answered (metrics): the method if registered (else null), the
   * outcome (`ok` or the error's code) and the seconds from parsed request to reply.
   */
  observe?: (method: string | null, outcome: string, seconds: number) => void;
}

const PROTOCOL_CODES: Record<number, string> = {
  [RPC.PARSE_ERROR]: 'PARSE_ERROR',
  [RPC.INVALID_REQUEST]: 'INVALID_REQUEST',
  [RPC.METHOD_NOT_FOUND]: 'METHOD_NOT_FOUND',
  [RPC.INVALID_PARAMS]: 'INVALID_PARAMS',
  [RPC.INTERNAL_ERROR]: 'INTERNAL_ERROR',
};

/** The outcome label of a reply: `ok`, an SmError code, or a JSON-RPC protocol error's name. */
function outcomeOf(error: JsonRpcErrorObject | null): string {
  if (!error) return 'ok';
  const code = (error.data as { code?: unknown } | undefined)?.code;
  if (error.code === RPC.APPLICATION_ERROR && typeof code === 'string') return code;
  return PROTOCOL_CODES[error.code] ?? String(error.code);
}

const strictUtf8 = new TextDecoder('utf-8', { fatal: true });

/**
 * Turns one framed message (a request or a batch) into the reply to send, or null when
 * nothing is owed (notifications only). Never throws.
 */
export class Dispatcher {
  constructor(
    private readonly registry: MethodRegistry,
    private readonly logger: Logger,
    private readonly opts: DispatcherOptions,
  ) {}

  async handle(raw: Uint8Array, ctx: CallContext): Promise<JsonRpcResponse | JsonRpcResponse[] | null> {
    return this.dispatch(raw, ctx);
  }

  /**
   * Like handle(), but a request whose method answers synchronously is answered synchronously:
   * no promise, no microtask hops on the hot path (the socket server uses this; profiled in
   * scripts/bench/rpc.mjs). Never throws.
   */
  dispatch(raw: Uint8Array, ctx: CallContext): Reply | Promise<Reply> {
    let message: unknown;
    try {
      // ASCII (nearly every request) is valid UTF-8 as it is; only other bytes need the strict decoder.
      message = JSON.parse(isAscii(raw) ? Buffer.from(raw.buffer, raw.byteOffset, raw.byteLength).toString('latin1') : strictUtf8.decode(raw));
    } catch (err) {
      const why = err instanceof TypeError ? 'invalid UTF-8' : (err as Error).message;
      this.opts.observe?.(null, 'PARSE_ERROR', 0);
      return errorResponse(null, { code: RPC.PARSE_ERROR, message: `Parse error: ${why}` });
    }
    if (Array.isArray(message)) {
      if (message.length === 0) return errorResponse(null, { code: RPC.INVALID_REQUEST, message: 'Invalid Request: empty batch' });
      if (message.length > this.opts.maxBatch) {
        return errorResponse(null, { code: RPC.INVALID_REQUEST, message: `Invalid Request: batch of ${message.length} exceeds the limit of ${this.opts.maxBatch}` });
      }
      return Promise.all(message.map((m) => this.handleOne(m, ctx))).then((replies) => {
        const owed = replies.filter((r): r is JsonRpcResponse => r !== null);
        return owed.length > 0 ? owed : null;
      });
    }
    return this.handleOne(message, ctx);
  }

  private handleOne(message: unknown, ctx: CallContext): JsonRpcResponse | null | Promise<JsonRpcResponse | null> {
    if (typeof message !== 'object' || message === null || Array.isArray(message)) {
      return errorResponse(null, { code: RPC.INVALID_REQUEST, message: 'Invalid Request: not an object' });
    }
    const req = message as Record<string, unknown>;
    const hasId = Object.hasOwn(req, 'id');
    const id: JsonRpcId = hasId && isValidId(req.id) ? req.id : null;
    if (req.jsonrpc !== '2.0' || typeof req.method !== 'string' || (hasId && !isValidId(req.id))) {
      this.opts.observe?.(null, 'INVALID_REQUEST', 0);
      return errorResponse(id, { code: RPC.INVALID_REQUEST, message: 'Invalid Request: needs jsonrpc "2.0", a string method and a string, number or null id' });
    }
    const method = req.method;
    const t0 = this.opts.observe ? performance.now() : 0;
    const observed = (error: JsonRpcErrorObject | null) => {
      if (!this.opts.observe) return;
      this.opts.observe(this.registry.get(method) ? method : null, outcomeOf(error), (performance.now() - t0) / 1000);
    };
    const succeeded = (result: unknown): JsonRpcResponse | null => {
      observed(null);
      return hasId ? { jsonrpc: '2.0', id, result: result === undefined ? null : result } : null;
    };
    const failed = (err: unknown): JsonRpcResponse | null => {
      const error = toErrorObject(err);
      if (error.code === RPC.APPLICATION_ERROR && (error.data as { code?: string } | undefined)?.code === 'INTERNAL') {
        this.logger.error('method failed', { method, err });
      }
      observed(error);
      return hasId ? errorResponse(id, error) : null;
    };
    let result: unknown;
    try {
      result = this.invoke(method, req.params, ctx);
    } catch (err) {
      return failed(err);
    }
    return isThenable(result) ? Promise.resolve(result).then(succeeded, failed) : succeeded(result);
  }

  /** Validates and runs one method call; used for in-process calls too. */
  async call(method: string, params: unknown, ctx: CallContext): Promise<unknown> {
    return this.invoke(method, params, ctx);
  }

  /** Validates and starts one call: the handler's value (a promise for asynchronous methods); throws what validation refuses. */
  private invoke(method: string, params: unknown, ctx: CallContext): unknown {
    const spec = this.registry.get(method);
    if (!spec) throw new RpcProtocolError(RPC.METHOD_NOT_FOUND, `Method not found: ${method.length > 100 ? `${method.slice(0, 100)}...` : method}`);
    if (spec.mutating && ctx.readOnly) throw new SmError('FORBIDDEN', `${method} changes state and is not allowed on the read-only socket`, { method });
    if (params !== undefined && (typeof params !== 'object' || params === null || Array.isArray(params))) {
      throw new RpcProtocolError(RPC.INVALID_PARAMS, 'Invalid params: params must be an object (by-name)', { issues: [{ path: '', message: 'expected an object' }] });
    }
    const parsed = spec.params.safeParse(params ?? {});
    if (!parsed.success) throw invalidParams(parsed.error);
    return spec.handler(parsed.data, ctx);
  }
}

export type Reply = JsonRpcResponse | JsonRpcResponse[] | null;

function isThenable(v: unknown): v is PromiseLike<unknown> {
  return v instanceof Promise || (typeof v === 'object' && v !== null && typeof (v as { then?: unknown }).then === 'function');
}

function invalidParams(error: z.ZodError): RpcProtocolError {
  const issues = error.issues.map((i) => {
    const keys = (i as { keys?: string[] }).keys;
    const path = [...i.path, ...(i.code === 'unrecognized_keys' && keys ? [keys[0]] : [])].map(String).join('.');
    return { path, message: i.message };
  });
  const first = issues[0];
  return new RpcProtocolError(RPC.INVALID_PARAMS, `Invalid params: ${first ? `${first.path || '(params)'}: ${first.message}` : 'rejected'}`, { issues });
}
