/**
 * Bandwidth shaping with tc: download (to the service) on the host side of its veth, whose egress
 * is what the service receives; upload on the namespace side (eth0), whose egress is what it
 * sends. A token bucket (tbf) per direction; null or 0 removes it.
 */
import { toSmError } from '../errors.js';
import { NS_IFNAME } from '../net/names.js';
import { defaultRunner, type Runner } from '../net/runner.js';

export interface ShapeTarget {
  hostVeth: string;
  netnsName: string;
}

/** tc arguments for a tbf of `bytesPerSecond` (pure). */
export function tbfArgs(dev: string, bytesPerSecond: number): string[] {
  const rate = Math.max(1, Math.round(bytesPerSecond));
  // Bucket: 20 ms of traffic, at least 16 KiB (above rate/HZ and a GSO segment's worth).
  const burst = Math.max(16 * 1024, Math.ceil(rate / 50));
  return ['qdisc', 'replace', 'dev', dev, 'root', 'tbf', 'rate', `${rate * 8}bit`, 'burst', String(burst), 'latency', '200ms'];
}

export class Shaper {
  private readonly runner: Runner;
  private readonly tc: string;

  constructor(opts: { runner?: Runner; tc?: string } = {}) {
    this.runner = opts.runner ?? defaultRunner;
    this.tc = opts.tc ?? 'tc';
  }

  async apply(target: ShapeTarget, speeds: { dlSpeed: number | null; ulSpeed: number | null }): Promise<void> {
    await this.one([], target.hostVeth, speeds.dlSpeed);
    await this.one(['-n', target.netnsName], NS_IFNAME, speeds.ulSpeed);
  }

  private async one(prefix: string[], dev: string, speed: number | null): Promise<void> {
    if (speed !== null && speed > 0) {
      await this.runner(this.tc, [...prefix, ...tbfArgs(dev, speed)], { timeoutMs: 10_000 });
      return;
    }
    await this.runner(this.tc, [...prefix, 'qdisc', 'del', 'dev', dev, 'root'], { timeoutMs: 10_000 }).catch((err: unknown) => {
      // "no qdisc to delete" is the state we want; a missing device or binary is a real error.
      const msg = String(toSmError(err).details?.['stderr'] ?? '');
      if (!/Cannot delete qdisc with handle of zero|No such file or directory.*qdisc|Invalid handle/i.test(msg)) throw err;
    });
  }
}
