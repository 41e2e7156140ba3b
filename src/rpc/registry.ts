import * as z from 'zod';

/** What a handler learns about its caller. */
export interface CallContext {
  /** The request came in on the read-only socket. */
  readOnly: boolean;
  /** Per-connection state for subscriptions; absent for in-process calls. */
  connection?: ConnectionHandle;
}

export interface ConnectionHandle {
  readonly id: number;
  /** Send a JSON-RPC notification to this client. */
  notify(method: string, params: unknown): void;
  /** Run when the connection closes. */
  onClose(fn: () => void): void;
}

export interface MethodSpec<S extends z.ZodType = z.ZodType, R = unknown> {
  name: string;
  summary: string;
  /** Validates params (absent params are treated as `{}`) and documents them in rpc.discover. */
  params: S;
  /** Optional schema of the result, for the OpenRPC document only. */
  result?: z.ZodType;
  /** Changes state: refused with FORBIDDEN on the read-only socket. */
  mutating: boolean;
  handler(params: z.output<S>, ctx: CallContext): R | Promise<R>;
}

/** Declares a method with its params type inferred from the schema. */
export function defineMethod<S extends z.ZodType, R>(spec: MethodSpec<S, R>): MethodSpec<S, R> {
  return spec;
}

/** Params with no fields: `{}` or absent; extra keys are refused like everywhere else. */
export const noParams = z.strictObject({});

/** The method registry every domain registers into; the RPC server dispatches from it. */
export class MethodRegistry {
  private readonly methods = new Map<string, MethodSpec>();

  add(...specs: MethodSpec<any, any>[]): void {
    for (const spec of specs) {
      if (this.methods.has(spec.name)) throw new Error(`method ${spec.name} registered twice`);
      this.methods.set(spec.name, spec as MethodSpec);
    }
  }

  get(name: string): MethodSpec | undefined {
    return this.methods.get(name);
  }

  list(): MethodSpec[] {
    return [...this.methods.values()].sort((a, b) => a.name.localeCompare(b.name));
  }

  /** The OpenRPC document, generated from the same schemas that validate params. */
  openrpc(info: { title: string; version: string }): Record<string, unknown> {
    return {
      openrpc: '1.2.6',
      info,
      methods: this.list().map((m) => {
        const schema = toJsonSchema(m.params);
        const props = (schema.properties ?? {}) as Record<string, unknown>;
        const required = new Set((schema.required ?? []) as string[]);
        return {
          name: m.name,
          summary: m.summary,
          paramStructure: 'by-name',
          params: Object.entries(props).map(([name, s]) => ({ name, required: required.has(name), schema: s })),
          result: { name: 'result', schema: m.result ? toJsonSchema(m.result) : {} },
          'x-mutating': m.mutating,
        };
      }),
    };
  }
}

function toJsonSchema(schema: z.ZodType): Record<string, unknown> {
  return z.toJSONSchema(schema, { io: 'input', unrepresentable: 'any' }) as Record<string, unknown>;
}
