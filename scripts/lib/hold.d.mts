export interface HoldReply {
  ok: boolean;
  error?: string;
  at: number;
  [key: string]: unknown;
}

export interface Hold<Info> {
  info: Info;
  control(cmd: string, timeoutMs?: number): Promise<HoldReply>;
  stop(): Promise<void>;
}

export function startHold<Info = Record<string, unknown>>(script: string, opts?: { startTimeoutMs?: number; stopTimeoutMs?: number; what?: string }): Promise<Hold<Info>>;
