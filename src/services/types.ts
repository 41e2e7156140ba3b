import type { services } from '../db/schema.js';
import type { Settings } from './settings.js';

/** services.state / status, mirroring systemd (SPEC section 4). */
export const STATE = { stopped: 0, running: 1, failed: 2 } as const;
export const STATUS = { ok: 0, error: 1 } as const;

/** A row of the services table. */
export type Row = typeof services.$inferSelect;

/** What smd keeps of an image's config in services.imageConfig. */
export type ImageConfigJson = { entrypoint: string[]; cmd: string[]; env: string[]; workingDir: string; exposedPorts?: string[] };

/** The Service object clients see (SPEC section 7). */
export interface Service {
  id: string;
  version: number;
  serviceProvider: string | null;
  unit: string;
  uid: number;
  state: number;
  status: number;
  desired: string;
  startat: number | null;
  layers: string[];
  settings: Settings;
  rowVersion: number;
  createdAt: number;
  updatedAt: number;
  /** The service's address on smd's bridge (null when traffic is disabled). */
  address?: string | null;
  /** Id of the trusted key that signed the installed image (images.trust.keys); null when unsigned. */
  signedBy: string | null;
}

export interface LiveView {
  activeState: string;
  subState: string;
  mainPid: number | null;
  since: number | null;
  restarts: number | null;
  memoryCurrent: number | null;
  tasksCurrent: number | null;
  result: string | null;
  execMainStatus: number | null;
}

/** What a service's network provides to its unit; supplied by the traffic module when enabled. */
export interface ServiceNetworking {
  /** Creates (idempotently) the service's namespace, address and accounting; called before each start. */
  ensure(serviceId: string, limits: Settings): Promise<{ netnsPath: string; address: string; nameservers?: string[] }>;
  remove(serviceId: string): Promise<void>;
  /** The service's address on smd's bridge, if it has one. */
  address(serviceId: string): string | null;
  /** Applies changed limits and speeds at once. */
  updateLimits?(serviceId: string, limits: Settings): Promise<void>;
}

export interface InstallRequest {
  image: string;
  /** `sha256:<hex>` of the archive (URL sources). */
  digest?: string | undefined;
  size?: number | undefined;
  id?: string | undefined;
  version?: number | undefined;
  settings?: Settings | undefined;
  force?: boolean | undefined;
  /** A sigstore bundle given beside the image (object, or the absolute path of a file). */
  signature?: Record<string, unknown> | string | undefined;
}
